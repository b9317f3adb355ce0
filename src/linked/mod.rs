//! Several servers, one chat, through Redis: the other implementation of
//! [`Elsewhere`] ([`Linked`]), and the link itself ([`redis_link`]).
//! Built only with the `redis` feature (on by default), used only with
//! `--redis`; the chat and the hub know none of it.
//!
//! The link knows rooms by name and lines as text; the hub knows rooms by
//! number and clients by [`ClientId`]. [`Linked`] translates, and holds
//! the one rule that makes several servers one chat: **a room line is
//! shown when it comes back from Redis, never before**, on every server,
//! its sender's included. So everyone sees a room's lines in the one
//! order Redis numbered them in.
//!
//! Three things travel with each line, written into the text Redis
//! carries (see [`encode`]): what the room keeps of it ([`Keep`]), the
//! new topic if it sets one, and who is left out of it (`except`: the
//! one whose news it is, who was told otherwise). A `ClientId` means
//! something only on the server that made it, so it is written with this
//! run's token, and only that run heeds it.
//!
//! When Redis is slower than the room (the link's outbox is full), lines
//! wait here, in order, and go as it takes them (after each event):
//! nothing is lost or reordered by a burst. When the link is down, a
//! line is shown here at once and goes nowhere else: chat among this
//! server's users carries on, and they are told the others cannot hear
//! them ([`Told::Unreachable`], when [`Delivery::LinkDown`] comes). So is
//! a line said while Redis is so far behind that [`HELD_BACK_BYTES`] of
//! lines wait here already (for the outbox, or for their room's past),
//! and then only the log says so.
//!
//! Names, private lines and `/who`-like questions travel the same way:
//! the chat asks ([`Ask`]), this module hands it to the link with a
//! ticket where an answer is due, and turns the answers back into
//! [`Told`]s for the chat: a claim's verdict, whether a private line
//! arrived, every server's part of an answer. A client has one question
//! out at a time, its answers take at most [`ANSWERS_BYTES`], and this
//! server gives its own part again for a second (`ANSWER_KEPT`) without asking the
//! chat. A `/who` part is a count and only the names the page asked for
//! needs ([`WhoPart`](crate::elsewhere::WhoPart)).
//!
//! Nothing from Redis is taken on trust: a room line, a private line or
//! an answer that is not exactly what a server would send (one line, no
//! control characters, a kind that belongs there) is dropped and logged,
//! and the link refuses a node number no server could have made.
//!
//! Next: [`redis_link`], the link itself.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chat::{ClientId, Keep, RoomId};
use crate::elsewhere::{
    Act, Arrival, Ask, Asker, Elsewhere, Query, Reach, RoomLine, Told, Unasked, Waiting,
};
use crate::hub::Event;
use crate::queue;

mod moderation;
mod outage;
pub mod redis_link;
mod wire;

use moderation::{waiting_weight, Publication, Unsent};
use redis_link::{DeliveriesTaken, Delivery, LinkGauges, RedisLink, Refused, RulesCopy, Sink};
pub use wire::{decode, encode};
use wire::{is_clean, is_nick_key, is_server_line, is_sound, is_sound_answer};

/// A question of someone here to every server, while the answers come.
#[derive(Debug)]
struct Gathering {
    id: ClientId,
    query: Query,
    page: Option<String>,
    /// How many servers heard it, once Redis has said.
    expected: Option<usize>,
    parts: Vec<String>,
    /// The bytes of `parts`, at most [`ANSWERS_BYTES`].
    bytes: usize,
    /// Whether a part was left out: too long, or not one clean line.
    cut: bool,
}

/// The most bytes of answers one question of a client here gathers from
/// all servers together: past it, the answer says not every server's
/// part is in. (Ten servers' parts of ten pages of `/who`.)
pub const ANSWERS_BYTES: usize = 256 << 10;

/// The most questions of this server's clients that wait for answers at
/// once (each client has one at most): past it, this server answers them
/// alone. With [`ANSWERS_BYTES`], what all of them may bring through this
/// server's subscription at once stays within Redis' default output limit
/// for a subscriber (32 MB), past which Redis cuts it off.
const QUESTIONS_AT_ONCE: usize = 64;

/// How long this server's part of an answer is given again, without
/// asking the chat, to the same question from any server: a burst of
/// `/who` in a big room costs each server one look at the room.
const ANSWER_KEPT: Duration = Duration::from_secs(1);

/// How many different questions' answers are kept at once.
const MOST_ANSWERS_KEPT: usize = 256;

/// The most bytes of room lines that wait here, for room in the link's
/// outbox or for their room's past, all rooms together (each line counted
/// with 128 bytes more for what it costs besides its text): beyond, Redis
/// is so far behind that lines said here are shown here only, as when it
/// is down. 16 MiB: some 4,000 lines of the longest kind, or 70,000 of
/// 100 bytes.
pub const HELD_BACK_BYTES: usize = 16 << 20;

/// What a waiting line costs besides its text: its room's name, its
/// place in the queue, its counts.
const LINE_OVERHEAD: usize = 128;

/// What a line held back here counts against [`HELD_BACK_BYTES`].
fn weight(line: &RoomLine) -> usize {
    let topic = match &line.keep {
        Keep::Topic(topic) => topic.len(),
        _ => 0,
    };
    line.line.len() + topic + LINE_OVERHEAD
}

/// What the users of this server are told when the link goes down.
pub const LINK_DOWN: &str = "the link to the other servers is down: you can still chat with \
                             the people on this server, but the others do not hear you, nor \
                             you them; you will be told when it is back";

/// ... and when it is back.
pub const LINK_UP: &str = "the link to the other servers is back: what they said meanwhile \
                           has been shown; what was said here meanwhile stayed here";

/// ... and when it is back, but Redis lost what it kept.
pub const LINK_UP_HISTORY_LOST: &str = "the link to the other servers is back, but Redis lost \
                                        what it kept: rooms' history and topics start over";

/// A room this server has members in, as the link knows it.
#[derive(Debug)]
struct Joined {
    /// Its name on every server.
    key: String,
    /// Until Redis has told what the room said before (its
    /// [`Delivery::Recent`]), lines said here wait, so that none comes
    /// back before the past it follows; and changes of its rules with
    /// them, in their place.
    waiting: Option<Vec<Waiting>>,
}

/// The hub's end of the link: the other servers, through Redis, as the
/// hub's [`Elsewhere`].
#[derive(Debug)]
pub struct Linked {
    link: RedisLink,
    /// Counted as the hub takes each of the link's deliveries
    /// ([`Elsewhere::arrived`]), for the metrics.
    taken: DeliveriesTaken,
    rooms: HashMap<RoomId, Joined>,
    by_key: HashMap<String, RoomId>,
    /// Rooms left during the event in hand: their names are still needed
    /// for its last lines (who left), and forgotten after.
    leaving: Vec<RoomId>,
    /// Room lines (and rules) the link's outbox had no room for, oldest
    /// first, with their room's name; handed over by [`Linked::pump`].
    overflow: VecDeque<(String, Publication)>,
    /// Whether the log said that lines stay here, since `held_back` was
    /// last at most half of [`HELD_BACK_BYTES`].
    overflow_warned: bool,
    /// The bytes of lines waiting in `overflow` and in the rooms'
    /// `waiting`, counted by [`weight`]; at most [`HELD_BACK_BYTES`].
    held_back: usize,
    /// `held_back` as the metrics read it, copied after each event.
    held_back_shown: Arc<AtomicUsize>,
    /// Private lines on their way, by ticket: who sent them, to whom.
    private: HashMap<u64, (ClientId, String, Arc<str>)>,
    /// Moderators' acts on their way, by ticket: who asked, for whom.
    acts: HashMap<u64, (ClientId, String, Act)>,
    /// The rules of each room this server is in, by name, as last read
    /// from Redis: what a change made here is made on.
    copies: HashMap<String, RulesCopy>,
    /// Changes of rooms' rules made while the link was down, by room
    /// name: they go when it is back.
    unsent: HashMap<String, Unsent>,
    /// Questions to every server, by ticket, while their answers come.
    gathering: HashMap<u64, Gathering>,
    /// The clients here whose question is in `gathering`: one each.
    asking: HashSet<ClientId>,
    /// The question from a server that the chat is answering now, as it
    /// came: its answer is kept under it.
    answering: Option<(Asker, String)>,
    /// This server's recent answers, by question, for [`ANSWER_KEPT`].
    answers: RefCell<HashMap<String, (Instant, String)>>,
    next_ticket: u64,
}

/// What the metrics show of the link: whether Redis is reachable, and how
/// far behind it is (the bytes of lines held back here for it).
#[derive(Debug)]
pub struct LinkedGauges {
    link: LinkGauges,
    held_back: Arc<AtomicUsize>,
}

impl crate::metrics::Source for LinkedGauges {
    fn collect(&self, out: &mut crate::metrics::Exposition) {
        self.link.collect(out);
        out.gauge(
            "chat_server_redis_held_back_bytes",
            &format!(
                "Bytes of room lines held here because Redis is behind (at most \
                 {HELD_BACK_BYTES}; past it, lines are shown on this server only)."
            ),
            self.held_back.load(Ordering::Relaxed) as f64,
        );
    }
}

impl Linked {
    /// The link's figures for the metrics; reading them changes nothing.
    pub fn gauges(&self) -> LinkedGauges {
        LinkedGauges {
            link: self.link.gauges(),
            held_back: Arc::clone(&self.held_back_shown),
        }
    }

    /// Wraps a link opened with no sink yet ([`RedisLink::open`]): what
    /// it delivers goes to the hub once [`Elsewhere::forward`] says where.
    /// (One from [`RedisLink::start`] keeps delivering to its own queue,
    /// for whoever holds the other end to hand [`Linked::delivered`].)
    pub fn new(link: RedisLink) -> Linked {
        Linked {
            taken: link.deliveries_taken(),
            link,
            rooms: HashMap::new(),
            by_key: HashMap::new(),
            leaving: Vec::new(),
            overflow: VecDeque::new(),
            overflow_warned: false,
            held_back: 0,
            held_back_shown: Arc::default(),
            private: HashMap::new(),
            acts: HashMap::new(),
            copies: HashMap::new(),
            unsent: HashMap::new(),
            gathering: HashMap::new(),
            asking: HashSet::new(),
            answering: None,
            answers: RefCell::new(HashMap::new()),
            next_ticket: 0,
        }
    }

    /// Hands Redis the lines that waited for room in the link's outbox,
    /// oldest first, as many as it takes now. Done after each event: the lines this server published coming back are events, so
    /// the outbox draining wakes it.
    fn pump(&mut self) {
        while let Some((key, waiting)) = self.overflow.front() {
            let published = match waiting {
                Publication::Line(line) => self.publish(key, line),
                Publication::Rules { base, rules } => self.write_rules(key, base, rules.as_deref()),
            };
            if published.is_err() {
                return;
            }
            if let Some((_, waiting)) = self.overflow.pop_front() {
                self.held_back -= waiting.weight();
            }
        }
        // Changes of rules that found no room wait for the outbox to drain.
        if !self.unsent.is_empty() && self.link.is_up() {
            self.send_unsent();
        }
        // Said again only once what waits has gone well under the bound:
        // lines that wait for a room's past keep `held_back` up with the
        // overflow empty, and a count that hovers at the bound would
        // otherwise warn per line.
        if self.held_back <= HELD_BACK_BYTES / 2 {
            self.overflow_warned = false;
        }
    }

    fn publish(&self, key: &str, line: &RoomLine) -> Result<(), Refused> {
        let text = encode(self.link.run(), line);
        match &line.keep {
            Keep::Topic(topic) => self.link.publish_topic(key, &text, topic),
            _ => self.link.publish(key, &text),
        }
    }

    /// Keeps a line the outbox had no room for, unless too much waits
    /// already: then Redis is far behind, and it is shown here only.
    fn hold_back(&mut self, key: String, line: RoomLine) -> Option<RoomLine> {
        if self.may_hold_back(weight(&line)) {
            self.overflow.push_back((key, Publication::Line(line)));
            return None;
        }
        self.rooms.contains_key(&line.room).then_some(line)
    }

    /// Whether something of `weight` may wait here, within
    /// [`HELD_BACK_BYTES`]: if so, it is counted.
    fn may_hold_back(&mut self, weight: usize) -> bool {
        if self.held_back + weight <= HELD_BACK_BYTES {
            self.held_back += weight;
            return true;
        }
        if !std::mem::replace(&mut self.overflow_warned, true) {
            log::warn!(
                "Redis is far behind ({HELD_BACK_BYTES} bytes wait for it): lines said here \
                 meanwhile stay on this server, changes of rules wait until it catches up"
            );
        }
        false
    }

    /// Sends a private line to `to` (in lower case) on whatever server has
    /// them; the answer comes as [`Told::PrivateSent`]. `Err` if it
    /// cannot be sent now.
    fn private(&mut self, from: ClientId, to: String, line: Arc<str>) -> Result<(), Refused> {
        let ticket = self.ticket();
        self.link.send_private(ticket, &to, &line)?;
        self.private.insert(ticket, (from, to, line));
        Ok(())
    }

    /// Asks every server its part of the answer to `query`, for `id`; the
    /// parts come as [`Told::Answered`]. `Err` if it cannot be asked now.
    /// `Err(Full)` if `id` has a question waiting already, or
    /// [`QUESTIONS_AT_ONCE`] wait: then the chat answers it alone.
    fn query(&mut self, id: ClientId, query: Query, page: Option<String>) -> Result<(), Refused> {
        if self.asking.contains(&id) || self.gathering.len() >= QUESTIONS_AT_ONCE {
            return Err(Refused::Full);
        }
        let ticket = self.ticket();
        self.link.ask_everyone(ticket, &query.encode())?;
        let gathering = Gathering {
            id,
            query,
            page,
            expected: None,
            parts: Vec::new(),
            bytes: 0,
            cut: false,
        };
        self.gathering.insert(ticket, gathering);
        self.asking.insert(id);
        Ok(())
    }

    /// This server's answer to `question`, if it gave one within
    /// [`ANSWER_KEPT`].
    fn kept_answer(&self, question: &str) -> Option<String> {
        let answers = self.answers.borrow();
        let (at, answer) = answers.get(question)?;
        (at.elapsed() < ANSWER_KEPT).then(|| answer.clone())
    }

    /// A number for something that waits for an answer from the link.
    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    /// The answer to `ticket`, if every part is in (or `done` says to
    /// stop waiting).
    fn gathered(&mut self, ticket: u64, done: bool) -> Told {
        let Entry::Occupied(entry) = self.gathering.entry(ticket) else {
            return Told::Nothing;
        };
        let complete = entry
            .get()
            .expected
            .is_some_and(|expected| entry.get().parts.len() >= expected);
        if !complete && !done {
            return Told::Nothing;
        }
        let gathering = entry.remove();
        self.asking.remove(&gathering.id);
        Told::Answered {
            id: gathering.id,
            query: gathering.query,
            page: gathering.page,
            parts: gathering.parts,
            // A cut is said even when a server was also late: the answer
            // lacks a part that came, which only a bigger answer would hold.
            reach: if gathering.cut {
                Reach::Cut
            } else if complete {
                Reach::Every
            } else {
                Reach::Partial
            },
        }
    }

    /// What the hub makes of what the link delivered.
    pub fn delivered(&mut self, delivery: Delivery) -> Told {
        match delivery {
            Delivery::Lines { room, lines, .. } => {
                let Some(&id) = self.by_key.get(&room) else {
                    return Told::Nothing;
                };
                // Before its `Recent`, a line belongs to an earlier join.
                if self.rooms.get(&id).is_none_or(|j| j.waiting.is_some()) {
                    return Told::Nothing;
                }
                let run = self.link.run();
                let shown: Vec<RoomLine> = lines
                    .iter()
                    .filter_map(|line| {
                        let local = decode(run, id, line);
                        if local.is_none() {
                            log::warn!("room {room}: a line from Redis makes no sense; dropped");
                        }
                        local
                    })
                    .collect();
                if shown.is_empty() {
                    return Told::Nothing;
                }
                Told::Lines(shown)
            }
            Delivery::Recent {
                room,
                lines,
                topic,
                rules,
            } => {
                let Some(&id) = self.by_key.get(&room) else {
                    return Told::Nothing;
                };
                let waiting = self
                    .rooms
                    .get_mut(&id)
                    .and_then(|joined| joined.waiting.take())
                    .unwrap_or_default();
                self.held_back -= waiting.iter().map(waiting_weight).sum::<usize>();
                let past: Vec<Arc<str>> = lines
                    .iter()
                    .filter_map(|text| decode(self.link.run(), id, text))
                    .filter(|local| local.keep == Keep::History)
                    .map(|local| local.line)
                    .collect();
                let topic = topic.filter(|topic| {
                    let clean = is_clean(topic);
                    if !clean {
                        log::warn!("room {room}: a topic from Redis makes no sense; ignored");
                    }
                    clean
                });
                // Nobody ever spoke there, set its topic or kept rules
                // for it: new, for all it matters. (Its notices do not
                // count: the maker's own arrival is among them.)
                let fresh = past.is_empty() && topic.is_none() && rules == RulesCopy::default();
                self.copies.insert(room.clone(), rules.clone());
                let rules = self.with_unsent(&room, rules);
                // Rules that make no sense are not a room without rules:
                // this server keeps what it had.
                let rules = match rules {
                    Some(rules) if !moderation::is_clean_rules(&room, &rules) => None,
                    rules => Some(rules),
                };
                Told::Recent {
                    room: id,
                    lines: past,
                    topic,
                    rules,
                    fresh,
                    // To the chat first, which knows the rules they may
                    // break; those it lets through come back to `say`.
                    waiting,
                }
            }
            Delivery::Missed { room, from, to } => match self.by_key.get(&room) {
                Some(&id) => {
                    let count = to - from + 1;
                    let lines = if count == 1 { "line" } else { "lines" };
                    Told::TellRoom(
                        id,
                        format!(
                            "{count} {lines} said in {room} on other servers could not be \
                             recovered"
                        ),
                    )
                }
                None => Told::Nothing,
            },
            Delivery::LinkDown { reason } => self.link_down(&reason),
            Delivery::RoomRules { room, rules } => self.room_rules(room, rules),
            Delivery::ServerBans(bans) => moderation::server_bans_told(bans),
            Delivery::Claimed { name, claim } => Told::Claimed(name, claim),
            Delivery::NameLost { name, lapsed } => Told::NameLost(name, lapsed),
            Delivery::Private { to, line } => {
                if is_nick_key(&to) && is_server_line(&line, &["private"]) {
                    Told::PrivateIn(to, line.into())
                } else {
                    log::warn!("a private line from Redis makes no sense; dropped");
                    Told::Nothing
                }
            }
            Delivery::PrivateSent { ticket, sent } => match self.private.remove(&ticket) {
                Some((from, to, line)) => Told::PrivateSent {
                    from,
                    to,
                    line,
                    sent,
                },
                None => self.act_sent(ticket, sent),
            },
            Delivery::Act { to, act } => moderation::act_told(to, &act),
            Delivery::Question {
                run,
                ticket,
                question,
            } => {
                let Some(query) = Query::decode(&question).filter(is_sound) else {
                    log::warn!("a question from {run} makes no sense; not answered");
                    return Told::Nothing;
                };
                // Answered a moment ago: the same answer, without the chat.
                if let Some(answer) = self.kept_answer(&question) {
                    self.link.reply(&run, ticket, &answer);
                    return Told::Nothing;
                }
                let asker = Asker {
                    server: run,
                    ticket,
                };
                self.answering = Some((asker.clone(), question));
                Told::Question { asker, query }
            }
            Delivery::Asked {
                ticket,
                nodes: Some(nodes),
            } => {
                let Some(gathering) = self.gathering.get_mut(&ticket) else {
                    return Told::Nothing;
                };
                gathering.expected = Some(nodes);
                self.gathered(ticket, false)
            }
            // Nobody heard it: Redis could not be asked.
            Delivery::Asked {
                ticket,
                nodes: None,
            } => match self.gathering.remove(&ticket) {
                Some(gathering) => {
                    self.asking.remove(&gathering.id);
                    Told::AnswerHere {
                        id: gathering.id,
                        query: gathering.query,
                        page: gathering.page,
                    }
                }
                None => Told::Nothing,
            },
            Delivery::Answer { ticket, answer } => {
                let Some(gathering) = self.gathering.get_mut(&ticket) else {
                    return Told::Nothing;
                };
                // Shown to the asker inside one line: an answer that could
                // break it, or is not what a server sends, counts as no
                // answer, and so does one past the bytes all answers may
                // take.
                let fits = gathering.bytes + answer.len() <= ANSWERS_BYTES;
                let sound = is_sound_answer(&gathering.query, &answer);
                if !sound {
                    log::warn!("an answer from Redis makes no sense; left out");
                }
                if fits && sound {
                    gathering.bytes += answer.len();
                    gathering.parts.push(answer);
                } else {
                    gathering.cut = true;
                    gathering.parts.push(String::new());
                }
                self.gathered(ticket, false)
            }
            Delivery::AskTimedOut { ticket } => self.gathered(ticket, true),
            Delivery::LinkUp { history_lost } => self.link_up(history_lost),
        }
    }
}

/// The hub's queue of events, as the link's [`Sink`]: the link's threads
/// put each delivery there themselves, among the clients' events, and the
/// hub waits on that one queue only.
struct ToHub(queue::Sender<Event>);

impl Sink for ToHub {
    fn deliver(&self, delivery: Delivery, poll: Duration, stop: &AtomicBool) -> bool {
        let event = Event::Elsewhere(Arrival::new(delivery));
        self.0.send_unless(event, poll, stop).is_ok()
    }
}

impl Elsewhere for Linked {
    /// `guestN-`, N this server's number among all that share the Redis
    /// ([`RedisLink::number`]).
    fn guest_prefix(&self) -> Option<String> {
        Some(format!("guest{}-", self.link.number()))
    }

    /// Makes the hub's queue the link's sink: what the link delivers goes
    /// there from the link's own threads, with no thread between (one
    /// hand-off and one wake-up less per line). What the link had at start
    /// (the server bans) goes in first, ahead of any client's event: this
    /// runs before the server accepts anyone, with the queue empty. The
    /// link's threads wait while the queue is full, and give up when the
    /// link stops or the hub is gone.
    fn forward(&mut self, hub: queue::Sender<Event>) {
        if !self.link.deliver_to(Box::new(ToHub(hub))) {
            log::error!("the link delivers to a queue of its own: the hub will not hear it");
        }
    }

    /// A room line was said here. It goes to Redis, to be shown when it
    /// comes back; or it waits for the room's past, or for room in the
    /// link's outbox (pumped after each event); or, when Redis cannot be reached,
    /// it is given back to be shown here at once.
    ///
    /// `key` gives the room's name, asked only for a room nobody here
    /// hears yet (a notice that someone came, said before they enter).
    fn say(&mut self, line: RoomLine, key: &dyn Fn() -> Option<String>) -> Option<RoomLine> {
        let key = match self.rooms.get(&line.room) {
            Some(Joined {
                waiting: Some(_), ..
            }) if self.link.is_up() => {
                if !self.may_hold_back(weight(&line)) {
                    return Some(line);
                }
                if let Some(waiting) = self
                    .rooms
                    .get_mut(&line.room)
                    .and_then(|j| j.waiting.as_mut())
                {
                    waiting.push(Waiting::Line(line));
                }
                return None;
            }
            Some(joined) => joined.key.clone(),
            None => key()?,
        };
        // Behind lines that wait already: one order per room.
        if !self.overflow.is_empty() && self.link.is_up() {
            return self.hold_back(key, line);
        }
        match self.publish(&key, &line) {
            Ok(()) => None,
            Err(Refused::Full) => self.hold_back(key, line),
            Err(refused) => {
                log::debug!("room {key}: a line stays on this server: {refused}");
                self.rooms.contains_key(&line.room).then_some(line)
            }
        }
    }

    fn ask(&mut self, ask: Ask) -> Result<(), (Ask, Unasked)> {
        let refused = match &ask {
            Ask::Claim { name } => self.link.claim_name(name),
            Ask::Hold { name } => {
                self.link.hold_name(name);
                Ok(())
            }
            Ask::Release { name } => {
                self.link.release_name(name);
                Ok(())
            }
            Ask::Query { id, query, page } => self.query(*id, query.clone(), page.clone()),
            Ask::Private { from, to, line } => self.private(*from, to.clone(), Arc::clone(line)),
            Ask::Act { from, to, act } => self.act(*from, to.clone(), Act::clone(act)),
            // Made before this server knew the room's rules: it only adds.
            Ask::Rules { room, rules } => {
                self.change_rules(room.clone(), RulesCopy::default(), rules.clone());
                Ok(())
            }
        };
        refused.map_err(|refused| {
            let why = match refused {
                Refused::Full => Unasked::Busy,
                Refused::Down => Unasked::Unreachable,
            };
            (ask, why)
        })
    }

    /// Kept for `ANSWER_KEPT`, to be given again to the same question.
    fn answer(&self, asker: &Asker, answer: &str) {
        if let Some((asked, question)) = &self.answering {
            if asked == asker {
                let mut answers = self.answers.borrow_mut();
                answers.retain(|_, (at, _)| at.elapsed() < ANSWER_KEPT);
                if answers.len() < MOST_ANSWERS_KEPT {
                    answers.insert(question.clone(), (Instant::now(), answer.to_owned()));
                }
            }
        }
        self.link.reply(&asker.server, asker.ticket, answer);
    }

    /// The first member here entered `room`, called `key` on every
    /// server: hear it.
    fn entered(&mut self, room: RoomId, key: &dyn Fn() -> Option<String>) {
        let Some(key) = key() else {
            return;
        };
        self.link.join_room(&key);
        // Emptied in this same event, the room may still hold lines that
        // wait for its past: they wait for the new join's instead (and
        // stay counted in `held_back` until then).
        // A room number is never given twice, so a room entered again is
        // the same room, under the same key.
        let carried = match self.rooms.remove(&room) {
            Some(earlier) => {
                debug_assert_eq!(earlier.key, key);
                earlier.waiting.unwrap_or_default()
            }
            None => Vec::new(),
        };
        self.by_key.insert(key.clone(), room);
        let joined = Joined {
            key,
            waiting: Some(carried),
        };
        self.rooms.insert(room, joined);
        self.leaving.retain(|&other| other != room);
    }

    /// The last member here left `room`: stop hearing it, once the event
    /// in hand is done.
    fn emptied(&mut self, room: RoomId) {
        if let Some(joined) = self.rooms.get(&room) {
            self.link.leave_room(&joined.key);
            self.leaving.push(room);
        }
    }

    /// The event in hand is handled: rooms left during it are forgotten,
    /// and lines that waited for room in the outbox go as it takes them.
    fn event_done(&mut self) {
        for room in self.leaving.drain(..) {
            if let Some(joined) = self.rooms.remove(&room) {
                self.by_key.remove(&joined.key);
                self.copies.remove(&joined.key);
                let waited = joined.waiting.unwrap_or_default();
                self.held_back -= waited.iter().map(waiting_weight).sum::<usize>();
            }
        }
        self.pump();
        // Only the hub thread writes it, and only when it changed: most
        // events leave it as it was.
        if self.held_back_shown.load(Ordering::Relaxed) != self.held_back {
            self.held_back_shown
                .store(self.held_back, Ordering::Relaxed);
        }
    }

    fn arrived(&mut self, arrival: Arrival) -> Told {
        self.taken.took();
        match arrival.open::<Delivery>() {
            Some(delivery) => self.delivered(delivery),
            None => Told::Nothing,
        }
    }

    fn save(&mut self, save: crate::chat::Save) {
        self.share(save);
    }
}

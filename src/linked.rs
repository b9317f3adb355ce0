//! The hub's side of the link to other servers: what it hands Redis, and
//! what it makes of what comes back.
//!
//! Only with `--redis`. The link itself ([`cluster`](crate::cluster))
//! knows rooms by name and lines as text; the hub knows rooms by number
//! and clients by [`ClientId`]. This module translates, and holds the
//! one rule that makes several servers one chat: **a room line is shown
//! when it comes back from Redis, never before**, on every server, its
//! sender's included. So everyone sees a room's lines in the one order
//! Redis numbered them in.
//!
//! Three things travel with each line, written into the text Redis
//! carries (see [`encode`]): what the room keeps of it ([`Keep`]), the
//! new topic if it sets one, and who is left out of it (`except`: the
//! one whose news it is, who was told otherwise). A `ClientId` means
//! something only on the server that made it, so it is written with this
//! run's token, and only that run heeds it.
//!
//! When Redis is slower than the room (the link's outbox is full), lines
//! wait here, in order, and go as it takes them ([`Linked::pump`]):
//! nothing is lost or reordered by a burst. When the link is down, a
//! line is shown here at once and goes nowhere else: chat among this
//! server's users carries on, and they are told the others cannot hear
//! them (the hub says so when [`Delivery::LinkDown`] comes). So is a line
//! said while Redis is so far behind that [`OVERFLOW`] lines wait, ahead
//! of them, and then only the log says so.
//!
//! Names, private lines and `/who`-like questions travel the same way:
//! the chat asks ([`Output::Claim`](crate::chat::Output::Claim),
//! [`Output::Private`](crate::chat::Output::Private),
//! [`Output::Query`](crate::chat::Output::Query)), this module hands it
//! to the link with a ticket where an answer is due, and turns the
//! answers back into [`Action`]s for the chat: a claim's verdict, whether
//! a private line arrived, every server's part of an answer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::chat::{ClientId, Keep, Query, Reach, RoomId};
use crate::cluster::{Claim, Delivery, Link, Refused, Sent};

/// A room line the hub is to show here now: it came back from Redis, or
/// it cannot go there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// The room.
    pub room: RoomId,
    /// The line, as the members get it.
    pub line: Arc<str>,
    /// Left out, if it is one of this server's clients.
    pub except: Option<ClientId>,
    /// What the room keeps of it.
    pub keep: Keep,
}

/// What the hub does with a delivery from the link.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Show a room line here.
    Line(Local),
    /// A room this server joined: what it said before. Its lines waiting
    /// for this follow in `then`.
    Recent {
        /// The room.
        room: RoomId,
        /// Its last chat and action lines, oldest first.
        lines: Vec<Arc<str>>,
        /// Its topic.
        topic: Option<String>,
        /// Lines said here meanwhile that could not go to Redis after all,
        /// to be shown here.
        then: Vec<Local>,
    },
    /// A notice for every member of a room.
    TellRoom(RoomId, String),
    /// The link is back: everyone here is told ([`LINK_UP`], or
    /// [`LINK_UP_HISTORY_LOST`]), and new nicks can be checked again.
    LinkUp {
        /// Redis lost its data meanwhile: this server has a new number
        /// ([`Linked::number`]) for its guests.
        history_lost: bool,
    },
    /// The link is down: everyone here is told ([`LINK_DOWN`]); then these
    /// lines, which were waiting for their rooms' past, are shown here.
    LinkDown(Vec<Local>),
    /// Redis answered a claim of a nick ([`Linked::claim`]).
    Claimed(String, Claim),
    /// A nick held here is someone's elsewhere: it lapsed during an
    /// outage (`true`), or was theirs already.
    NameLost(String, bool),
    /// A private line for someone here (the nick in lower case).
    PrivateIn(String, Arc<str>),
    /// What became of a private line sent from here ([`Linked::private`]).
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
    /// give it to [`Linked::reply`].
    Question {
        /// The asking server's run.
        run: String,
        /// Its ticket.
        ticket: u64,
        /// What it asks.
        query: Query,
    },
    /// The parts of the answer to what someone here asked are in.
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
    /// A question of someone here could not be asked after all (Redis
    /// refused it): this server answers it alone, and says so.
    AnswerHere {
        /// Who asked.
        id: ClientId,
        /// What.
        query: Query,
        /// The page asked for.
        page: Option<String>,
    },
    /// Nothing to do.
    Nothing,
}

/// A question of someone here to every server, while the answers come.
#[derive(Debug)]
struct Gathering {
    id: ClientId,
    query: Query,
    page: Option<String>,
    /// How many servers heard it, once Redis has said.
    expected: Option<usize>,
    parts: Vec<String>,
}

/// The most room lines that wait for room in the link's outbox (about
/// 100 bytes each): beyond, Redis is so far behind that lines said here
/// are shown here only, as when it is down.
pub const OVERFLOW: usize = 1 << 16;

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
    /// back before the past it follows.
    waiting: Option<Vec<Local>>,
}

/// The hub's end of the link.
#[derive(Debug)]
pub struct Linked {
    link: Link,
    rooms: HashMap<RoomId, Joined>,
    by_key: HashMap<String, RoomId>,
    /// Rooms left during the event in hand: their names are still needed
    /// for its last lines (who left), and forgotten after.
    leaving: Vec<RoomId>,
    /// Room lines the link's outbox had no room for, oldest first, with
    /// their room's name; handed over by [`Linked::pump`].
    overflow: VecDeque<(String, Local)>,
    /// Whether the log said that lines stay here, since the overflow
    /// last emptied.
    overflow_warned: bool,
    /// Private lines on their way, by ticket: who sent them, to whom.
    private: HashMap<u64, (ClientId, String, Arc<str>)>,
    /// Questions to every server, by ticket, while their answers come.
    gathering: HashMap<u64, Gathering>,
    next_ticket: u64,
}

impl Linked {
    /// Wraps a started link.
    pub fn new(link: Link) -> Linked {
        Linked {
            link,
            rooms: HashMap::new(),
            by_key: HashMap::new(),
            leaving: Vec::new(),
            overflow: VecDeque::new(),
            overflow_warned: false,
            private: HashMap::new(),
            gathering: HashMap::new(),
            next_ticket: 0,
        }
    }

    /// This server's number among all that share the Redis
    /// ([`Link::number`]).
    pub fn number(&self) -> u64 {
        self.link.number()
    }

    /// Asks the other servers for a nick (in lower case); the answer comes
    /// as [`Action::Claimed`]. `Err` if it cannot be asked now.
    pub fn claim(&self, name: &str) -> Result<(), Refused> {
        self.link.claim_name(name)
    }

    /// Holds a nick someone here took on arrival ([`Link::hold_name`]).
    pub fn hold(&self, name: &str) {
        self.link.hold_name(name);
    }

    /// Nobody here has this nick any more.
    pub fn release(&self, name: &str) {
        self.link.release_name(name);
    }

    /// Sends a private line to `to` (in lower case) on whatever server has
    /// them; the answer comes as [`Action::PrivateSent`]. `Err` if it
    /// cannot be sent now.
    pub fn private(&mut self, from: ClientId, to: String, line: Arc<str>) -> Result<(), Refused> {
        let ticket = self.ticket();
        self.link.send_private(ticket, &to, &line)?;
        self.private.insert(ticket, (from, to, line));
        Ok(())
    }

    /// The first member here entered `room`, called `key` on every
    /// server: hear it.
    pub fn entered(&mut self, room: RoomId, key: String) {
        self.link.join_room(&key);
        self.by_key.insert(key.clone(), room);
        let joined = Joined {
            key,
            waiting: Some(Vec::new()),
        };
        self.rooms.insert(room, joined);
        self.leaving.retain(|&other| other != room);
    }

    /// The last member here left `room`: stop hearing it, once the event
    /// in hand is done ([`Linked::event_done`]).
    pub fn emptied(&mut self, room: RoomId) {
        if let Some(joined) = self.rooms.get(&room) {
            self.link.leave_room(&joined.key);
            self.leaving.push(room);
        }
    }

    /// The event in hand is handled: rooms left during it are forgotten.
    pub fn event_done(&mut self) {
        for room in self.leaving.drain(..) {
            if let Some(joined) = self.rooms.remove(&room) {
                self.by_key.remove(&joined.key);
            }
        }
    }

    /// A room line was said here. It goes to Redis, to be shown when it
    /// comes back; or it waits for the room's past, or for room in the
    /// link's outbox ([`Linked::pump`]); or, when Redis cannot be reached,
    /// it is given back to be shown here at once.
    ///
    /// `key` gives the room's name, asked only for a room nobody here
    /// hears yet (a notice that someone came, said before they enter).
    pub fn say(&mut self, line: Local, key: impl FnOnce() -> Option<String>) -> Option<Local> {
        let key = match self.rooms.get_mut(&line.room) {
            Some(Joined {
                waiting: Some(waiting),
                ..
            }) if self.link.is_up() => {
                waiting.push(line);
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

    /// Hands Redis the lines that waited for room in the link's outbox,
    /// oldest first, as many as it takes now. The hub calls it after each
    /// event: the lines this server published coming back are events, so
    /// the outbox draining wakes it.
    pub fn pump(&mut self) {
        while let Some((key, line)) = self.overflow.front() {
            if self.publish(key, line).is_err() {
                return;
            }
            self.overflow.pop_front();
        }
        self.overflow_warned = false;
    }

    fn publish(&self, key: &str, line: &Local) -> Result<(), Refused> {
        let text = encode(self.link.run(), line);
        match &line.keep {
            Keep::Topic(topic) => self.link.publish_topic(key, &text, topic),
            _ => self.link.publish(key, &text),
        }
    }

    /// Keeps a line the outbox had no room for, unless [`OVERFLOW`] wait
    /// already: then Redis is far behind, and it is shown here only.
    fn hold_back(&mut self, key: String, line: Local) -> Option<Local> {
        if self.overflow.len() < OVERFLOW {
            self.overflow.push_back((key, line));
            return None;
        }
        if !std::mem::replace(&mut self.overflow_warned, true) {
            log::warn!(
                "Redis is far behind ({OVERFLOW} lines wait for it): lines said here \
                 meanwhile stay on this server"
            );
        }
        self.rooms.contains_key(&line.room).then_some(line)
    }

    /// Asks every server its part of the answer to `query`, for `id`; the
    /// parts come as [`Action::Answered`]. `Err` if it cannot be asked now.
    pub fn query(
        &mut self,
        id: ClientId,
        query: Query,
        page: Option<String>,
    ) -> Result<(), Refused> {
        let ticket = self.ticket();
        self.link.ask_everyone(ticket, &query.encode())?;
        let gathering = Gathering {
            id,
            query,
            page,
            expected: None,
            parts: Vec::new(),
        };
        self.gathering.insert(ticket, gathering);
        Ok(())
    }

    /// A number for something that waits for an answer from the link.
    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    /// Gives this server's part of an answer ([`Action::Question`]).
    pub fn reply(&self, run: &str, ticket: u64, answer: &str) {
        self.link.reply(run, ticket, answer);
    }

    /// The answer to `ticket`, if every part is in (or `done` says to
    /// stop waiting).
    fn gathered(&mut self, ticket: u64, done: bool) -> Action {
        let Some(gathering) = self.gathering.get(&ticket) else {
            return Action::Nothing;
        };
        let complete = gathering
            .expected
            .is_some_and(|expected| gathering.parts.len() >= expected);
        if !complete && !done {
            return Action::Nothing;
        }
        let Some(gathering) = self.gathering.remove(&ticket) else {
            return Action::Nothing;
        };
        Action::Answered {
            id: gathering.id,
            query: gathering.query,
            page: gathering.page,
            parts: gathering.parts,
            reach: if complete {
                Reach::Every
            } else {
                Reach::Partial
            },
        }
    }

    /// What the hub makes of what the link delivered.
    pub fn delivered(&mut self, delivery: Delivery) -> Action {
        match delivery {
            Delivery::Line { room, line, .. } => {
                let Some(&id) = self.by_key.get(&room) else {
                    return Action::Nothing;
                };
                // Before its `Recent`, a line belongs to an earlier join.
                if self.rooms.get(&id).is_none_or(|j| j.waiting.is_some()) {
                    return Action::Nothing;
                }
                match decode(self.link.run(), id, &line) {
                    Some(local) => Action::Line(local),
                    None => {
                        log::warn!("room {room}: a line from Redis makes no sense; dropped");
                        Action::Nothing
                    }
                }
            }
            Delivery::Recent { room, lines, topic } => {
                let Some(&id) = self.by_key.get(&room) else {
                    return Action::Nothing;
                };
                let waiting = self
                    .rooms
                    .get_mut(&id)
                    .and_then(|joined| joined.waiting.take())
                    .unwrap_or_default();
                let past = lines
                    .iter()
                    .filter_map(|text| decode(self.link.run(), id, text))
                    .filter(|local| local.keep == Keep::History)
                    .map(|local| local.line)
                    .collect();
                let then = waiting
                    .into_iter()
                    .filter_map(|line| self.say(line, || None))
                    .collect();
                Action::Recent {
                    room: id,
                    lines: past,
                    topic,
                    then,
                }
            }
            Delivery::Missed { room, from, to } => match self.by_key.get(&room) {
                Some(&id) => {
                    let count = to - from + 1;
                    let lines = if count == 1 { "line" } else { "lines" };
                    Action::TellRoom(
                        id,
                        format!(
                            "{count} {lines} said in {room} on other servers could not be \
                             recovered"
                        ),
                    )
                }
                None => Action::Nothing,
            },
            Delivery::LinkDown { reason } => {
                log::warn!("link to the other servers down: {reason}");
                // Lines waiting for a room's past would wait the whole
                // outage: they are shown here now instead.
                let mut lines = Vec::new();
                for joined in self.rooms.values_mut() {
                    if let Some(waiting) = &mut joined.waiting {
                        lines.append(waiting);
                    }
                }
                // And those waiting for the outbox, likewise.
                let rooms = &self.rooms;
                let waited = self.overflow.drain(..).map(|(_, line)| line);
                lines.extend(waited.filter(|line| rooms.contains_key(&line.room)));
                Action::LinkDown(lines)
            }
            Delivery::Claimed { name, claim } => Action::Claimed(name, claim),
            Delivery::NameLost { name, lapsed } => Action::NameLost(name, lapsed),
            Delivery::Private { to, line } => Action::PrivateIn(to, line.into()),
            Delivery::PrivateSent { ticket, sent } => match self.private.remove(&ticket) {
                Some((from, to, line)) => Action::PrivateSent {
                    from,
                    to,
                    line,
                    sent,
                },
                None => Action::Nothing,
            },
            Delivery::Question {
                run,
                ticket,
                question,
            } => match Query::decode(&question) {
                Some(query) => Action::Question { run, ticket, query },
                None => {
                    log::warn!("a question from {run} makes no sense; not answered");
                    Action::Nothing
                }
            },
            Delivery::Asked {
                ticket,
                nodes: Some(nodes),
            } => {
                let Some(gathering) = self.gathering.get_mut(&ticket) else {
                    return Action::Nothing;
                };
                gathering.expected = Some(nodes);
                self.gathered(ticket, false)
            }
            // Nobody heard it: Redis could not be asked.
            Delivery::Asked {
                ticket,
                nodes: None,
            } => match self.gathering.remove(&ticket) {
                Some(gathering) => Action::AnswerHere {
                    id: gathering.id,
                    query: gathering.query,
                    page: gathering.page,
                },
                None => Action::Nothing,
            },
            Delivery::Answer { ticket, answer } => {
                let Some(gathering) = self.gathering.get_mut(&ticket) else {
                    return Action::Nothing;
                };
                gathering.parts.push(answer);
                self.gathered(ticket, false)
            }
            Delivery::AskTimedOut { ticket } => self.gathered(ticket, true),
            Delivery::LinkUp { history_lost } => Action::LinkUp { history_lost },
        }
    }
}

/// The text Redis carries for a room line:
///
/// ```text
/// KIND EXCEPT LINE            KIND: h (history) or n (notice)
/// t EXCEPT TOPIC\nLINE        a topic change
/// ```
///
/// EXCEPT is `-`, or `RUN.ID`: client ID of the run RUN ([`Link::run`]). LINE is the
/// line as clients get it, `\n` included; a topic has no line end in it
/// (clients cannot send one), so the first `\n` ends it.
pub fn encode(token: &str, line: &Local) -> String {
    let except = match line.except {
        Some(id) => format!("{token}.{}", id.0),
        None => "-".to_owned(),
    };
    match &line.keep {
        Keep::Nothing => format!("n {except} {}", line.line),
        Keep::History => format!("h {except} {}", line.line),
        Keep::Topic(topic) => format!("t {except} {topic}\n{}", line.line),
    }
}

/// Reads back what [`encode`] wrote, for room `room` of this run `token`;
/// `None` if it is not that.
pub fn decode(token: &str, room: RoomId, text: &str) -> Option<Local> {
    let (kind, rest) = text.split_once(' ')?;
    let (except, rest) = rest.split_once(' ')?;
    let except = match except {
        "-" => None,
        other => {
            // A node's name may hold dots; the ID never does.
            let (run, id) = other.rsplit_once('.')?;
            let id: u64 = id.parse().ok()?;
            (run == token).then_some(ClientId(id))
        }
    };
    let (keep, line) = match kind {
        "n" => (Keep::Nothing, rest),
        "h" => (Keep::History, rest),
        "t" => {
            let (topic, line) = rest.split_once('\n')?;
            (Keep::Topic(topic.into()), line)
        }
        _ => return None,
    };
    if !line.ends_with('\n') {
        return None;
    }
    Some(Local {
        room,
        line: line.into(),
        except,
        keep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(except: Option<ClientId>, keep: Keep) -> Local {
        Local {
            room: RoomId(7),
            line: "notice alice set the topic of #tea: green\n".into(),
            except,
            keep,
        }
    }

    #[test]
    fn lines_round_trip_through_their_text() {
        for keep in [
            Keep::Nothing,
            Keep::History,
            Keep::Topic("green tea".into()),
        ] {
            let line = local(Some(ClientId(12)), keep);
            let text = encode("eu.1/run1", &line);
            assert_eq!(decode("eu.1/run1", RoomId(7), &text), Some(line.clone()));
            // Another run's client ID means nothing here.
            let theirs = decode("eu.1/run2", RoomId(7), &text).expect("decodes");
            assert_eq!(theirs.except, None);
            assert_eq!(theirs.line, line.line);
        }
    }

    #[test]
    fn nonsense_is_refused() {
        for text in [
            "",
            "h",
            "h -",
            "x - chat a b\n",
            "h run.x chat a b\n",
            "h - chat a b",
            "t - topic without a line",
        ] {
            assert_eq!(decode("run", RoomId(1), text), None, "{text:?}");
        }
    }
}

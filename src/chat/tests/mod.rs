//! The chat's rules, exercised without a hub: a stand-in ([`Harness`])
//! delivers what it says and checks its records agree after every event.
//! By topic: people and their names, rooms, moderation, and a chat shared
//! with other servers.

use super::*;
use crate::elsewhere::{Claim, Told};
use std::collections::HashSet;

mod moderation;
mod moderation_bounds;
mod people;
mod rooms;
mod shared;
mod shared_moderation;
mod shared_moderation_past;

const SETTINGS: ChatSettings = ChatSettings {
    max_line: 100,
    history: 3,
    history_bytes: 1 << 20,
    // Many tests make many rooms from one address; the limit has its own.
    rooms_per_minute: 1_000_000,
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
    /// Each client closed, and why (the first reason given).
    closed: HashMap<ClientId, CloseReason>,
    /// Shared: what the chat asked of the other servers, in order.
    asked: Vec<Output>,
    /// What the chat asked to be saved, in order.
    saved: Vec<Save>,
}

impl Harness {
    fn new(settings: ChatSettings) -> Harness {
        Harness {
            chat: Chat::new(settings),
            rooms: HashMap::new(),
            closed: HashMap::new(),
            asked: Vec::new(),
            saved: Vec::new(),
        }
    }

    /// One of several servers sharing the chat, whose guests are
    /// `guest7-N`.
    fn shared() -> Harness {
        Harness {
            chat: Chat::shared(SETTINGS, "guest7-".to_owned()),
            ..Harness::new(SETTINGS)
        }
    }

    /// What the chat asked of the others since the last look.
    fn asked(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.asked)
    }

    /// The others can be reached (`true`) or not, with nothing said.
    fn set_reachable(&mut self, up: bool) {
        if let Some(others) = &mut self.chat.others {
            others.reachable = up;
        }
    }

    /// Every line each client gets from `out`, without the `\n`.
    fn deliver(&mut self, out: Vec<Output>) -> HashMap<ClientId, Vec<String>> {
        let mut seen: HashMap<ClientId, Vec<String>> = HashMap::new();
        for output in out {
            match output {
                Output::To { id, line } => {
                    assert!(
                        !self.closed.contains_key(&id),
                        "{id} sent a line after close"
                    );
                    seen.entry(id).or_default().push(text(&line));
                }
                Output::ToRoom(RoomLine {
                    room,
                    line,
                    except,
                    keep,
                }) => {
                    // Alone, the hub shows a line at once, and the room
                    // keeps it; shared, only once it is back from the
                    // others, which the tests below say when.
                    if self.chat.others.is_none() {
                        self.chat.heard(room, &line, &keep);
                    }
                    for (&id, _) in self.rooms.iter().filter(|(_, &r)| r == room) {
                        if Some(id) != except {
                            seen.entry(id).or_default().push(text(&line));
                        }
                    }
                }
                Output::Enter { id, room } => {
                    self.rooms.insert(id, room);
                }
                Output::Close { id, why } => {
                    self.rooms.remove(&id);
                    self.closed.entry(id).or_insert(why);
                }
                asked @ Output::Elsewhere(_) => self.asked.push(asked),
                Output::Save(save) => self.saved.push(save),
            }
        }
        seen
    }

    /// What the other servers tell the chat: `act` calls the chat with it.
    fn by_others(
        &mut self,
        act: impl FnOnce(&mut Chat, &mut Vec<Output>),
    ) -> HashMap<ClientId, Vec<String>> {
        let mut out = Vec::new();
        act(&mut self.chat, &mut out);
        self.check();
        self.deliver(out)
    }

    /// The others answer the claim of `name`.
    fn claimed(&mut self, name: &str, claim: Claim) -> HashMap<ClientId, Vec<String>> {
        self.by_others(|chat, out| {
            chat.told(Told::Claimed(name.to_owned(), claim), out);
        })
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
        self.join_from(id, peer(), certificate)
    }

    /// The rooms' history together is at most `cap` bytes ([`check`]
    /// makes sure the chat counts it right after every event).
    ///
    /// [`check`]: Harness::check
    fn assert_history_within(&self, cap: usize, when: &str) {
        let total = self.chat.history_total;
        assert!(total <= cap, "{total} bytes {when}");
    }

    /// A client from the address `from`.
    fn join_from(
        &mut self,
        id: ClientId,
        from: SocketAddr,
        certificate: Option<PeerCertificate>,
    ) -> HashMap<ClientId, Vec<String>> {
        let mut out = Vec::new();
        self.chat.join(id, from, certificate, &mut out);
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
        let history: usize = chat.rooms.values().map(|state| state.history.bytes()).sum();
        assert_eq!(chat.history_total, history, "the history's count");
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

//! The chat's rules, exercised without a hub: a stand-in delivers what it
//! says and checks its records agree after every event.

use super::*;
use crate::elsewhere::{Claim, Reach, Sent, Told};
use std::collections::HashSet;

const SETTINGS: ChatSettings = ChatSettings {
    max_line: 100,
    history: 3,
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
    closed: HashSet<ClientId>,
    /// Shared: what the chat asked of the other servers, in order.
    asked: Vec<Output>,
}

impl Harness {
    fn new(settings: ChatSettings) -> Harness {
        Harness {
            chat: Chat::new(settings),
            rooms: HashMap::new(),
            closed: HashSet::new(),
            asked: Vec::new(),
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
                    assert!(!self.closed.contains(&id), "{id} sent a line after close");
                    seen.entry(id).or_default().push(text(&line));
                }
                Output::ToRoom {
                    room,
                    line,
                    except,
                    keep,
                } => {
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
                Output::Close { id } => {
                    self.rooms.remove(&id);
                    self.closed.insert(id);
                }
                asked @ Output::Elsewhere(_) => self.asked.push(asked),
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
    let alice = ClientId(1);
    let seen = h.join_as(alice, cert("alice"));
    assert_eq!(seen[&alice][1], "notice you are alice");
    h.expect(
        alice,
        "/nick bob",
        &["error your nick is alice, the name in your certificate; it cannot be changed"],
    );
    h.expect(
        alice,
        "/token",
        &[
            "error your certificate is who you are: no secret is needed to come back, \
           just connect again",
        ],
    );
    let odd = ClientId(3);
    let seen = h.join_as(odd, cert("not a nick"));
    assert!(seen[&odd][0].starts_with("error your certificate's common name (CN=not a nick)"));
    assert!(h.closed.contains(&odd));
    let b = h.join(4);
    h.expect(
        b,
        "/whois ALICE",
        &["notice alice is in #lobby, certificate CN=alice"],
    );
}

fn cert(cn: &str) -> Option<PeerCertificate> {
    Some(PeerCertificate {
        subject: format!("CN={cn}"),
        common_name: Some(cn.to_string()),
    })
}

#[test]
fn one_certificate_may_have_several_sessions_that_act_as_one_person() {
    let mut h = Harness::new(SETTINGS);
    let (laptop, phone, bob) = (ClientId(1), ClientId(2), ClientId(3));
    h.join_as(laptop, cert("alice"));
    h.join_as(bob, cert("bob"));
    let seen = h.join_as(phone, cert("Alice"));
    assert_eq!(
        seen[&phone],
        [
            format!("notice {}", protocol::WELCOME),
            "notice you are alice (2 sessions)".to_string(),
            "notice you are in #lobby (2 people here)".to_string(),
        ]
    );
    assert!(!seen.contains_key(&bob), "a second session is not news");
    // What one session says, the other sees, as everyone does.
    let seen = h.send(laptop, "hello");
    for id in [laptop, phone, bob] {
        assert_eq!(seen[&id], ["chat alice hello"]);
    }
    h.expect(bob, "/who", &["notice in #lobby (2): alice, bob"]);
    h.expect(
        bob,
        "/whois alice",
        &["notice alice is in #lobby, certificate CN=alice, 2 sessions"],
    );
    // Private lines reach every session of both.
    let seen = h.send(bob, "/msg alice psst");
    for id in [laptop, phone, bob] {
        assert_eq!(seen[&id], ["private bob alice psst"]);
    }
    let seen = h.send(phone, "/msg bob sent from the phone");
    assert_eq!(seen[&laptop], ["private alice bob sent from the phone"]);
    // One session moves the person, every session with it.
    let seen = h.send(phone, "/join #side");
    assert_eq!(seen[&bob], ["notice alice left #lobby"]);
    for id in [laptop, phone] {
        assert_eq!(seen[&id], ["notice you are in #side (1 person here)"]);
    }
    // A session that goes is not a person who quits; the last one is.
    assert!(h.left(laptop, None).is_empty());
    h.send(bob, "/join #side");
    let seen = h.left(phone, Some("too slow"));
    assert_eq!(seen[&bob], ["notice alice quit: too slow"]);
    assert!(!h.chat.people.contains_key("alice"));
}

#[test]
fn one_certificate_cannot_take_more_than_its_sessions() {
    let mut h = Harness::new(SETTINGS);
    for n in 1..=3 {
        h.join_as(ClientId(n), cert("alice"));
    }
    let fourth = ClientId(4);
    let seen = h.join_as(fourth, cert("alice"));
    assert_eq!(
        seen[&fourth],
        [
            "error alice has 3 sessions already, the most one person may have; close one \
          and try again"
        ]
    );
    assert!(h.closed.contains(&fourth));
    h.left(ClientId(2), None);
    let seen = h.join_as(ClientId(5), cert("alice"));
    assert_eq!(seen[&ClientId(5)][1], "notice you are alice (3 sessions)");
}

/// The secret of a `token NICK SECRET` line sent to `id`.
fn secret_in(seen: &HashMap<ClientId, Vec<String>>, id: ClientId) -> String {
    let line = seen[&id]
        .iter()
        .find(|line| line.starts_with("token "))
        .expect("a token line");
    line.rsplit_once(' ').unwrap().1.to_string()
}

#[test]
fn a_reconnect_takes_its_nick_and_room_back_with_its_secret() {
    let mut h = Harness::new(SETTINGS);
    let (old, bob) = (h.join(1), h.join(2));
    let seen = h.send(old, "/token");
    let first = secret_in(&seen, old);
    assert_eq!(first.len(), 2 * SECRET_BYTES);
    assert_eq!(seen[&old], [format!("token guest1 {first}")]);
    // A new name, a new secret; the old one is dead with the old name.
    let seen = h.send(old, "/nick alice");
    let secret = secret_in(&seen, old);
    assert_ne!(secret, first);
    h.send(old, "/join #rust");
    h.send(bob, "/join #rust");
    // The connection drops without the server knowing; a new one comes.
    let new = h.join(3);
    let wrong = "0".repeat(2 * SECRET_BYTES);
    let refused = "error cannot reclaim alice: no connection of yours holds it with that \
                   secret (if it is free, take it with /nick alice)";
    h.expect(new, &format!("/reclaim alice {wrong}"), &[refused]);
    h.expect(new, &format!("/reclaim alice {first}"), &[refused]);
    let watcher = h.join(9);
    let seen = h.send(new, &format!("/reclaim ALICE {secret}"));
    assert_eq!(seen[&watcher], ["notice guest3 left #lobby"]);
    assert!(h.closed.contains(&old), "the ghost is closed");
    assert!(!seen.contains_key(&bob), "for the room, alice never left");
    let told = &seen[&new];
    assert!(!told.iter().any(|line| line.contains(" left ")), "{told:?}");
    assert_eq!(told[0], "notice you are alice again");
    assert_eq!(told[1], "notice you are in #rust (2 people here)");
    let next = secret_in(&seen, new);
    assert_ne!(next, secret);
    assert_eq!(nick_of(&h, new), "alice");
    // The secret worked once.
    let thief = h.join(4);
    h.expect(thief, &format!("/reclaim alice {secret}"), &[refused]);
    let seen = h.send(new, "back");
    assert_eq!(seen[&bob], ["chat alice back"]);
}

#[test]
fn a_reclaim_in_the_same_room_is_not_news_to_the_reclaimer() {
    let mut h = Harness::new(SETTINGS);
    let (ghost, watcher) = (h.join(1), h.join(2));
    h.send(ghost, "/nick alice");
    let secret = secret_in(&h.send(ghost, "/token"), ghost);
    let new = h.join(3);
    let seen = h.send(new, &format!("/reclaim alice {secret}"));
    assert_eq!(seen[&watcher], ["notice guest3 left #lobby"]);
    assert!(
        !seen[&new].iter().any(|line| line.contains("guest3 left")),
        "{:?}",
        seen[&new]
    );
    assert_eq!(seen[&new][1], "notice you are in #lobby (2 people here)");
}

#[test]
fn without_a_secret_nobody_takes_a_name() {
    let mut h = Harness::new(SETTINGS);
    let (a, b) = (h.join(1), h.join(2));
    h.send(a, "/nick alice");
    // alice never asked for a secret: there is none to guess.
    let refused = "error cannot reclaim alice: no connection of yours holds it with that \
                   secret (if it is free, take it with /nick alice)";
    h.expect(b, "/reclaim alice 00", &[refused]);
    h.expect(
        b,
        "/reclaim alice",
        &["error /reclaim needs a nick and its secret: \
                                       /reclaim NICK SECRET"],
    );
    h.expect(a, "/reclaim alice 00", &["notice you are already alice"]);
    assert_eq!(nick_of(&h, a), "alice");
}

#[test]
fn secrets_compare_equal_only_when_equal() {
    let secret = [0xabu8; SECRET_BYTES];
    let text = hex(&secret);
    assert!(same_secret(&secret, &text));
    assert!(!same_secret(&secret, &text.to_uppercase()));
    assert!(!same_secret(&secret, &text[1..]));
    let mut other = text.clone().into_bytes();
    other[31] = b'0';
    assert!(!same_secret(&secret, std::str::from_utf8(&other).unwrap()));
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

fn name(name: &str) -> String {
    name.to_owned()
}

#[test]
fn linked_guests_get_names_no_other_server_gives_and_hold_them() {
    let mut h = Harness::shared();
    let a = h.join(3);
    assert_eq!(nick_of(&h, a), "guest7-3");
    assert_eq!(
        h.asked(),
        vec![Output::Elsewhere(Ask::Hold {
            name: name("guest7-3")
        })]
    );
    // Nobody takes a guest's name by hand: another server may be
    // about to give it.
    h.expect(
        a,
        "/nick guest2-9",
        &["error guest2-9 is a guest name, and the servers give those out; choose another"],
    );
    assert!(h.asked().is_empty());
    // Leaving lets the name go everywhere.
    h.left(a, None);
    assert_eq!(
        h.asked(),
        vec![Output::Elsewhere(Ask::Release {
            name: name("guest7-3")
        })]
    );
}

#[test]
fn a_linked_nick_changes_only_once_the_other_servers_agree() {
    let mut h = Harness::shared();
    let a = h.join(1);
    let b = h.join(2);
    h.asked();
    // Asked, not yet taken: nobody is told anything yet.
    assert!(h.send(a, "/nick Alice").is_empty());
    assert_eq!(
        h.asked(),
        vec![Output::Elsewhere(Ask::Claim {
            name: name("alice")
        })]
    );
    assert_eq!(nick_of(&h, a), "guest7-1");
    // Meanwhile nobody else here may ask for it, nor the asker twice.
    h.expect(
        b,
        "/nick alice",
        &["error nick alice is taken; choose another"],
    );
    h.expect(
        a,
        "/nick carol",
        &["error wait: the other servers have not yet answered your last /nick"],
    );
    let seen = h.claimed("alice", Claim::Ours);
    assert_eq!(seen[&a], vec!["notice you are now Alice"]);
    assert_eq!(seen[&b], vec!["notice guest7-1 is now Alice"]);
    assert_eq!(
        h.asked(),
        vec![Output::Elsewhere(Ask::Release {
            name: name("guest7-1")
        })]
    );
    // Someone elsewhere has it: the name stays as it was.
    h.send(b, "/nick bob");
    let seen = h.claimed("bob", Claim::Taken);
    assert_eq!(
        seen[&b],
        vec!["error nick bob is taken on another server; choose another"]
    );
    assert_eq!(nick_of(&h, b), "guest7-2");
    // The asker left before the answer: the name goes back at once.
    h.send(b, "/nick dave");
    h.asked();
    h.left(b, None);
    h.asked();
    h.claimed("dave", Claim::Ours);
    assert_eq!(h.asked(), vec![Output::Elsewhere(Ask::Release { name: name("dave") })]);
}

#[test]
fn a_claim_answered_after_its_asker_was_renamed_is_let_go() {
    let mut h = Harness::shared();
    let a = h.join(1);
    let b = h.join(2);
    h.send(b, "/nick bob");
    h.claimed("bob", Claim::Ours);
    h.asked();
    h.send(a, "/nick alice");
    assert_eq!(
        h.asked(),
        vec![Output::Elsewhere(Ask::Claim {
            name: name("alice")
        })]
    );
    // Meanwhile its guest name lapsed in an outage and went elsewhere.
    let seen = h.by_others(|chat, out| chat.name_lost("guest7-1", true, out));
    assert_eq!(
        seen[&a][0],
        "error your nick guest7-1 lapsed while this server could not reach the others, \
         and someone there has it now"
    );
    let renamed = nick_of(&h, a);
    assert!(
        renamed.starts_with("guest7-") && renamed != "guest7-1",
        "{renamed}"
    );
    assert_eq!(
        h.asked(),
        vec![Output::Elsewhere(Ask::Hold {
            name: renamed.to_lowercase()
        })]
    );
    // The old claim comes back granted: not for the new name.
    h.claimed("alice", Claim::Ours);
    assert_eq!(nick_of(&h, a), renamed);
    assert_eq!(
        h.asked(),
        vec![Output::Elsewhere(Ask::Release {
            name: name("alice")
        })]
    );
    // Someone else's already, on arrival: said as such.
    let seen = h.by_others(|chat, out| chat.name_lost("bob", false, out));
    assert_eq!(seen[&b][0], "error bob is connected on another server");
}

#[test]
fn with_the_link_down_no_new_nick_is_taken() {
    let mut h = Harness::shared();
    let a = h.join(1);
    h.asked();
    h.set_reachable(false);
    h.expect(a, "/nick alice", &[&format!("error {LINK_DOWN_NICK}")]);
    assert!(h.asked().is_empty());
    // Only the case of one's own nick needs nobody's leave.
    h.expect(a, "/nick GUEST7-1", &["notice you are now GUEST7-1"]);
    h.set_reachable(true);
    h.send(a, "/nick alice");
    let seen = h.claimed("alice", Claim::Down);
    assert_eq!(seen[&a], vec![format!("error {LINK_DOWN_NICK}")]);
    h.send(a, "/nick alice");
    let seen = h.claimed("alice", Claim::Busy);
    assert_eq!(
        seen[&a],
        vec!["error the other servers are busy; try /nick again in a moment"]
    );
    assert_eq!(nick_of(&h, a), "GUEST7-1");
}

#[test]
fn a_linked_private_line_shows_once_it_arrived() {
    let mut h = Harness::shared();
    let a = h.join(1);
    h.asked();
    // Not here: perhaps elsewhere; the sender sees it once it arrived.
    assert!(h.send(a, "/msg Zed psst").is_empty());
    let asked = h.asked();
    let [Output::Elsewhere(Ask::Private { from, to, line })] = asked.as_slice() else {
        panic!("{asked:?}");
    };
    assert_eq!((*from, to.as_str()), (a, "zed"));
    assert_eq!(text(line), "private guest7-1 Zed psst");
    let seen = h.by_others(|chat, out| chat.private_sent(a, "zed", line, Sent::Delivered, out));
    assert_eq!(seen[&a], vec!["private guest7-1 Zed psst"]);
    let seen = h.by_others(|chat, out| chat.private_sent(a, "zed", line, Sent::NoOne, out));
    assert_eq!(seen[&a], vec!["error no user named zed is connected"]);
    // A line from elsewhere for someone here.
    let seen = h.by_others(|chat, out| {
        chat.private_in("guest7-1", &"private zed guest7-1 hi\n".into(), out)
    });
    assert_eq!(seen[&a], vec!["private zed guest7-1 hi"]);
    h.set_reachable(false);
    h.expect(a, "/msg zed again", &[&format!("error {LINK_DOWN_MSG}")]);
}

#[test]
fn linked_who_rooms_and_whois_ask_every_server_and_merge_the_answers() {
    let mut h = Harness::shared();
    let a = h.join(1);
    let b = h.join(2);
    h.send(b, "/join #Tea");
    h.asked();
    assert!(h.send(a, "/who").is_empty());
    let query = Query::Who("#lobby".into());
    assert_eq!(
        h.asked(),
        vec![Output::Elsewhere(Ask::Query {
            id: a,
            query: query.clone(),
            page: None
        })]
    );
    // This server's part, and another's, put together in one order.
    let here = h.chat.local_answer(&query);
    assert_eq!(here, "guest7-1");
    let mut out = Vec::new();
    let parts = [here, "Zed amy".to_owned()];
    h.chat
        .answered(a, &query, None, &parts, Reach::Every, &mut out);
    assert_eq!(
        h.deliver(out)[&a],
        vec!["notice in #lobby (3): amy, guest7-1, Zed"]
    );
    // Rooms: counts of one room on several servers add up.
    assert_eq!(h.chat.local_answer(&Query::Rooms), "#lobby 1 #Tea 1");
    let parts = ["#lobby 1 #Tea 1".to_owned(), "#tea 4 #rust 2".to_owned()];
    let seen = h.by_others(|chat, out| {
        chat.answered(a, &Query::Rooms, None, &parts, Reach::Partial, out)
    });
    assert_eq!(
        seen[&a],
        vec![
            "notice rooms: #lobby (1), #rust (2), #Tea (5) \
             (not every server answered in time)"
        ]
    );
    // Whois: someone here is answered at once; anyone else, by all.
    h.expect(a, "/whois guest7-2", &["notice guest7-2 is in #Tea"]);
    assert!(h.send(a, "/whois Zed").is_empty());
    let asked = h.asked();
    assert_eq!(
        asked,
        vec![Output::Elsewhere(Ask::Query {
            id: a,
            query: Query::Whois("zed".into()),
            page: None
        })]
    );
    let mut out = Vec::new();
    let parts = [String::new(), "Zed is in #rust".to_owned()];
    h.chat.answered(
        a,
        &Query::Whois("zed".into()),
        None,
        &parts,
        Reach::Every,
        &mut out,
    );
    assert_eq!(h.deliver(out)[&a], vec!["notice Zed is in #rust"]);
    // The link down: this server's users only, and said so.
    h.set_reachable(false);
    h.expect(
        a,
        "/who",
        &["notice in #lobby (1): guest7-1 (this server only: the link to the others is down)"],
    );
    for query in [
        Query::Who("#Tea".into()),
        Query::Rooms,
        Query::Whois("x".into()),
    ] {
        assert_eq!(
            Query::decode(&query.encode()).map(|q| q.encode()),
            Some(query.encode())
        );
    }
}

#[test]
fn guest_names_of_linked_servers_are_recognised() {
    for key in ["guest1-2", "guest12-345"] {
        assert!(is_guest_name(key), "{key}");
    }
    for key in [
        "guest1",
        "guest-2",
        "guest1-",
        "guest1-2-3",
        "guesta-1",
        "alice",
    ] {
        assert!(!is_guest_name(key), "{key}");
    }
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

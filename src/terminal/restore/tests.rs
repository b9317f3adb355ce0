//! The restoring driven over server lines written in the server's wording
//! and in another: the client comes back into the same nick and room, and
//! Tab completes the same nicks and rooms, whatever the sentences say.

use super::*;
use crate::protocol::{RoomList, WhoList, WORDING};
use crate::terminal::completion::Roster;

/// Every sentence of the server's wording said another way.
static REWORDED: Wording = Wording {
    you_are: "welcome, {nick}",
    you_are_sessions: "welcome, {nick}: session {sessions}",
    you_are_now: "your name is {nick} from now on",
    you_are_back: "{nick} is yours again",
    you_are_already: "{nick} is already your name",
    you_are_in: "entered {room} with {here} present",
    you_are_in_alone: "entered {room}, alone ({here})",
    already_in: "already in {room}",
    joined: "{room} <- {nick}",
    left: "{room} -> {nick}",
    renamed: "{new}, formerly {old}",
    quit: "{nick} has gone",
    quit_because: "{nick} has gone ({reason})",
    kicked: "{by} sent {nick} away from {room}",
    kicked_because: "{by} sent {nick} away from {room} ({reason})",
    who: "{count} in {room}: {names}",
    who_page: "{count} in {room} [{first}-{last}]: {names}",
    who_more: " (more: /who {next})",
    rooms: "open rooms: {rooms}",
    rooms_page: "open rooms {first}-{last}: {rooms}",
    rooms_more: " (more: /rooms {next})",
    room_count: "{room}={count}",
    remark: " [{remark}]",
    separator: " / ",
    server_full: "no place at all ({max}), come back later",
    too_many_from_address: "{ip} has {here} connections, come back later",
    too_many_sessions: "{nick} has {max} sessions, come back later",
    cannot_reclaim: "{nick} cannot be reclaimed",
};

/// A client as the connection loop runs it, minus the sockets: what it
/// sent, showed and completes.
struct Client {
    restorer: Restorer,
    roster: Roster,
    sent: Vec<String>,
    shown: Vec<String>,
    notes: Vec<String>,
    /// Why the lines typed while away were not sent, if they were not.
    not_as_typed: Option<String>,
}

impl Client {
    fn new(wording: &'static Wording) -> Client {
        Client {
            restorer: Restorer::new(wording),
            roster: Roster::default(),
            sent: Vec::new(),
            shown: Vec::new(),
            notes: Vec::new(),
            not_as_typed: None,
        }
    }

    fn begin(&mut self, returning: bool, asked: Option<&str>) {
        self.sent = self.restorer.begin(returning, false, asked);
    }

    /// One line as the loop takes it; true once back.
    fn take(&mut self, line: &str) -> bool {
        let parsed = ServerLine::parse(line);
        let notice = match parsed {
            Some(ServerLine::Notice(text)) => self.restorer.notice(text),
            _ => None,
        };
        let step = self.restorer.take(parsed.as_ref(), notice.as_ref());
        self.roster.learn(parsed.as_ref(), notice.as_ref());
        self.notes.extend(step.note);
        self.sent.extend(step.send);
        if step.ready {
            self.not_as_typed = step.not_as_typed;
        }
        if step.show {
            self.shown.push(line.to_string());
        }
        step.ready
    }
}

/// What a server speaking `w` sends, and what the client does, through a
/// first connection and two comebacks. Returns the client at the end.
fn comebacks(w: &'static Wording) -> Client {
    let notice = |n: Notice<'_>| format!("notice {}", n.write_in(w));
    let error = |r: Refusal<'_>| format!("error {}", r.write_in(w));
    let mut client = Client::new(w);

    // First connection: guest, then the nick asked for, then a room.
    client.begin(false, Some("alice"));
    assert_eq!(client.sent, ["/nick alice", "/token"]);
    assert!(client.restorer.is_done());
    client.take("notice Welcome to the secure chat server!");
    client.take(&notice(Notice::YouAre {
        nick: "guest1",
        sessions: None,
    }));
    client.take(&notice(Notice::YouAreIn {
        room: "#lobby",
        here: 2,
    }));
    client.take(&notice(Notice::YouAreNow { nick: "alice" }));
    client.take("token alice s1");
    client.take(&notice(Notice::YouAreIn {
        room: "#rust",
        here: 1,
    }));
    client.take(&notice(Notice::Joined {
        nick: "bob",
        room: "#rust",
    }));
    client.take(&notice(Notice::Who(WhoList {
        room: "#rust",
        count: 3,
        page: None,
        names: vec!["alice", "bob", "carol"],
        remark: Some("not every server answered in time"),
    })));
    client.take(&notice(Notice::Renamed {
        old: "carol",
        new: "dave",
    }));
    client.take(&notice(Notice::Joined {
        nick: "erin",
        room: "#rust",
    }));
    client.take(&notice(Notice::Quit {
        nick: "erin",
        reason: Some("lunch"),
    }));
    assert_eq!(client.roster.starting_with(""), ["alice", "bob", "dave"]);
    client.take(&notice(Notice::Rooms(RoomList {
        page: None,
        rooms: vec![("#lobby", 1), ("#rust", 3), ("#rustls", 2)],
        remark: None,
    })));
    assert_eq!(
        client.roster.rooms_starting_with("#R"),
        ["#rust", "#rustls"]
    );
    assert!(!client.shown.iter().any(|line| line.contains("s1")));

    // Dropped: back with the secret, into #rust.
    client.begin(true, None);
    assert_eq!(client.sent, ["/reclaim alice s1"]);
    assert!(!client.restorer.is_done());
    assert!(!client.take(&notice(Notice::YouAre {
        nick: "guest2",
        sessions: None,
    })));
    assert!(!client.take(&notice(Notice::YouAreIn {
        room: "#lobby",
        here: 3,
    })));
    assert!(!client.take(&notice(Notice::YouAreBack { nick: "alice" })));
    assert!(client.take(&notice(Notice::YouAreIn {
        room: "#rust",
        here: 2,
    })));
    assert_eq!(client.sent, ["/reclaim alice s1"], "already in #rust");
    client.take("token alice s2");
    client.take(&notice(Notice::Who(WhoList {
        room: "#rust",
        count: 250,
        page: Some(crate::protocol::Page {
            first: 1,
            last: 2,
            next: Some(2),
        }),
        names: vec!["alice", "bob"],
        remark: None,
    })));
    assert_eq!(client.roster.starting_with("b"), ["bob"]);

    // The server restarted and forgot the secret: the nick is asked for
    // again, then the room.
    client.begin(true, None);
    assert_eq!(client.sent, ["/reclaim alice s2"]);
    client.take(&notice(Notice::YouAre {
        nick: "guest1",
        sessions: None,
    }));
    client.take(&notice(Notice::YouAreIn {
        room: "#lobby",
        here: 1,
    }));
    let shown = client.shown.len();
    assert!(!client.take(&error(Refusal::CannotReclaim { nick: "alice" })));
    assert_eq!(client.shown.len(), shown, "the refusal is the client's own");
    assert_eq!(client.sent, ["/reclaim alice s2", "/nick alice", "/token"]);
    assert!(!client.take(&notice(Notice::YouAreNow { nick: "alice" })));
    assert_eq!(client.sent.last().map(String::as_str), Some("/join #rust"));
    assert!(client.take(&notice(Notice::YouAreIn {
        room: "#rust",
        here: 1,
    })));
    assert!(client.restorer.is_done());
    assert_eq!(client.notes.len(), 1, "{:?}", client.notes);
    assert_eq!(client.not_as_typed, None, "back as alice in #rust");

    // Refusals before a close: which may pass.
    let passes = |r: Refusal<'_>| client.restorer.passes(&r.write_in(w));
    assert!(passes(Refusal::ServerFull { max: 3 }));
    assert!(passes(Refusal::TooManyFromAddress {
        ip: "127.0.0.1",
        here: 2
    }));
    assert!(passes(Refusal::TooManySessions {
        nick: "alice",
        max: 3
    }));
    assert!(!passes(Refusal::CannotReclaim { nick: "alice" }));
    assert!(!client.restorer.passes("alice is already connected"));
    client
}

#[test]
fn the_client_comes_back_in_the_servers_wording() {
    let client = comebacks(&WORDING);
    // The server's wording is the one PROTOCOL.md shows.
    assert!(client
        .shown
        .contains(&"notice you are in #rust (1 person here)".to_string()));
}

#[test]
fn the_client_comes_back_and_completes_in_another_wording() {
    let client = comebacks(&REWORDED);
    assert!(client
        .shown
        .contains(&"notice entered #rust, alone (1)".to_string()));
    assert!(client.shown.contains(
        &"notice 3 in #rust: alice / bob / carol [not every server answered in time]".to_string()
    ));
}

#[test]
fn a_client_reading_one_wording_does_not_understand_another() {
    // The reworded test proves something only if the wording matters: a
    // client that reads the server's wording never gets back from lines
    // written in the other.
    let mut client = Client::new(&WORDING);
    client.begin(false, Some("alice"));
    client.take(&format!(
        "notice {}",
        Notice::YouAreNow { nick: "alice" }.write_in(&REWORDED)
    ));
    client.take("token alice s1");
    client.begin(true, None);
    // It never knew it was alice, so it cannot come back as alice.
    assert_eq!(client.sent, ["/token"]);
    client.take(&format!(
        "notice {}",
        Notice::Joined {
            nick: "bob",
            room: "#lobby"
        }
        .write_in(&REWORDED)
    ));
    assert!(client.roster.starting_with("b").is_empty());
    client.take(&format!(
        "notice {}",
        Notice::Rooms(RoomList {
            page: None,
            rooms: vec![("#rust", 1)],
            remark: None
        })
        .write_in(&REWORDED)
    ));
    assert!(client.roster.rooms_starting_with("#").is_empty());
}

/// The server forgot the secret and someone took the nick meanwhile (or
/// its ghost still holds it on another server): the client ends up a guest
/// in the lobby, and what was typed as alice in #rust must not be posted
/// there under the guest's name.
#[test]
fn back_as_someone_else_the_lines_typed_while_away_are_not_sent() {
    let w = &WORDING;
    let notice = |n: Notice<'_>| format!("notice {}", n.write_in(w));
    let mut client = Client::new(w);
    client.begin(false, Some("alice"));
    client.take(&notice(Notice::YouAre {
        nick: "guest1",
        sessions: None,
    }));
    client.take(&notice(Notice::YouAreNow { nick: "alice" }));
    client.take("token alice s1");
    client.take(&notice(Notice::YouAreIn {
        room: "#rust",
        here: 1,
    }));

    client.begin(true, None);
    client.take(&notice(Notice::YouAre {
        nick: "guest7",
        sessions: None,
    }));
    client.take(&notice(Notice::YouAreIn {
        room: "#lobby",
        here: 2,
    }));
    let refused = format!(
        "error {}",
        Refusal::CannotReclaim { nick: "alice" }.write_in(w)
    );
    assert!(!client.take(&refused));
    assert_eq!(client.sent.last().map(String::as_str), Some("/token"));
    assert!(client.take("error the nick alice is taken"));
    assert_eq!(
        client.not_as_typed.as_deref(),
        Some("typed as alice in #rust, and this connection is guest7 in #lobby")
    );

    // From then on the guest in the lobby is who the client is: after the
    // next drop, back as guest7 in #lobby is back as before.
    client.begin(true, None);
    client.take(&notice(Notice::YouAre {
        nick: "guest7",
        sessions: None,
    }));
    client.take(&notice(Notice::YouAreIn {
        room: "#lobby",
        here: 2,
    }));
    assert!(client.take(&notice(Notice::YouAreAlready { nick: "guest7" })));
    assert_eq!(client.not_as_typed, None);
}

#[test]
fn a_nick_that_is_a_word_of_the_wording_is_still_taken_back() {
    // `you are now again`: `now` reclaimed, as the client waits for.
    let mut client = Client::new(&WORDING);
    client.begin(false, Some("now"));
    client.take("notice you are now now");
    client.take("token now s1");
    client.begin(true, None);
    assert_eq!(client.sent, ["/reclaim now s1"]);
    client.take("notice you are now again");
    assert!(client.take("notice you are in #lobby (2 people here)"));
}

#[test]
fn a_certificate_comes_back_by_its_greeting() {
    let mut restorer = Restorer::new(&WORDING);
    assert!(restorer.begin(false, true, None).is_empty());
    let line = ServerLine::Notice("you are in #rust (1 person here)");
    let notice = restorer.notice("you are in #rust (1 person here)");
    restorer.take(Some(&line), notice.as_ref());
    assert!(restorer.begin(true, true, None).is_empty());
    assert!(!restorer.is_done());
    let lobby = "you are in #lobby (1 person here)";
    let step = restorer.take(
        Some(&ServerLine::Notice(lobby)),
        restorer.notice(lobby).as_ref(),
    );
    assert_eq!(step.send, ["/join #rust"]);
    assert!(!step.ready);
}

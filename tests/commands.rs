//! Every chat command: what it does, and what each mistake is told.
//!
//! "Never reaches" is checked without waiting: the hub handles lines in
//! order, so when a marker sent afterwards arrives first, the earlier line
//! was not delivered.

use secure_chat_test_support as support;

use secure_chat::server::Limits;
use support::{chat_of, chat_with, test_limits, TestClient};

/// Client `from` sends a line that client `to` must see next, proving
/// nothing else was on its way to `to`.
fn assert_nothing_before_marker(clients: &mut [TestClient], from: usize, to: usize) {
    clients[from].send("marker");
    let expected = format!("chat {} marker", clients[from].nick);
    assert_eq!(clients[to].recv(), expected);
}

#[test]
fn clients_start_as_distinct_guests() {
    let (_pki, server, clients) = chat_of(3);
    let mut nicks: Vec<&str> = clients.iter().map(|c| c.nick.as_str()).collect();
    assert!(nicks.iter().all(|n| n.starts_with("guest")), "{nicks:?}");
    nicks.dedup();
    assert_eq!(nicks.len(), 3);
    server.stop();
}

#[test]
fn nick_changes_are_announced_to_the_room() {
    let (_pki, server, mut c) = chat_of(2);
    let old = c[0].nick.clone();
    c[0].send("/nick Alice");
    assert_eq!(c[0].recv(), "notice you are now Alice");
    assert_eq!(c[1].recv(), format!("notice {old} is now Alice"));
    c[0].nick = "Alice".into();
    c[0].send("hello");
    assert_eq!(c[0].recv(), "chat Alice hello");
    assert_eq!(c[1].recv(), "chat Alice hello");
    // Changing only the case of one's own nick is allowed.
    c[0].send("/nick alice");
    assert_eq!(c[0].recv(), "notice you are now alice");
    c[0].send("/nick alice");
    assert_eq!(c[0].recv(), "notice you are already alice");
    server.stop();
}

#[test]
fn nick_errors() {
    let (_pki, server, mut c) = chat_of(2);
    c[0].send("/nick Alice");
    c[0].recv();
    c[1].recv();
    c[1].send("/nick aLiCe");
    assert_eq!(c[1].recv(), "error nick aLiCe is taken; choose another");
    c[1].send("/nick 9lives");
    let err = c[1].recv();
    assert!(
        err.starts_with("error \"9lives\" is not a valid nick (it must not start with a digit"),
        "{err}"
    );
    c[1].send("/nick bad!name");
    let err = c[1].recv();
    assert!(
        err.contains("only letters, digits, _ and - are allowed"),
        "{err}"
    );
    c[1].send(&format!("/nick {}", "n".repeat(25)));
    assert!(c[1].recv().contains("longer than 24 characters"));
    c[1].send("/nick");
    assert_eq!(c[1].recv(), "error /nick needs a name: /nick NAME");
    // None of it was announced.
    assert_nothing_before_marker(&mut c, 1, 0);
    server.stop();
}

#[test]
fn a_freed_nick_can_be_taken() {
    let (pki, server, mut c) = chat_of(1);
    c[0].send("/nick alice");
    c[0].recv();
    c[0].send("/quit");
    c[0].recv();
    let mut next = TestClient::connect(server.addr, &pki.ca);
    next.send("/nick alice");
    assert_eq!(next.recv(), "notice you are now alice");
    server.stop();
}

#[test]
fn rooms_are_isolated() {
    let (_pki, server, mut c) = chat_of(3);
    let (a, b) = (c[0].nick.clone(), c[1].nick.clone());
    c[0].send("/join #a");
    assert_eq!(c[0].recv(), "notice you are in #a (1 person here)");
    assert_eq!(c[1].recv(), format!("notice {a} left #lobby"));
    assert_eq!(c[2].recv(), format!("notice {a} left #lobby"));
    c[1].send("/join #A");
    assert_eq!(c[0].recv(), format!("notice {b} joined #a"));
    assert_eq!(c[1].recv(), "notice you are in #a (2 people here)");
    assert_eq!(c[2].recv(), format!("notice {b} left #lobby"));

    c[0].send("only for #a");
    assert_eq!(c[0].recv(), format!("chat {a} only for #a"));
    assert_eq!(c[1].recv(), format!("chat {a} only for #a"));
    c[2].send("only for #lobby");
    assert_eq!(c[2].recv(), format!("chat {} only for #lobby", c[2].nick));
    // Each room's marker is the next line there: nothing crossed over.
    assert_nothing_before_marker(&mut c, 0, 1);
    assert_nothing_before_marker(&mut c, 2, 2);
    server.stop();
}

#[test]
fn join_errors() {
    let (_pki, server, mut c) = chat_of(1);
    c[0].send("/join rust");
    let err = c[0].recv();
    let expected = "error \"rust\" is not a valid room name (room names start with #): use #";
    assert!(err.starts_with(expected), "{err}");
    c[0].send("/join #9");
    assert!(c[0].recv().contains("must not start with a digit"));
    c[0].send("/join");
    assert_eq!(c[0].recv(), "error /join needs a room: /join #ROOM");
    c[0].send("/join #LOBBY");
    assert_eq!(c[0].recv(), "notice you are already in #lobby");
    server.stop();
}

#[test]
fn rooms_lists_counts_and_forgets_empty_rooms() {
    let (_pki, server, mut c) = chat_of(3);
    c[0].send("/join #rust");
    c[0].recv();
    c[1].recv();
    c[2].recv();
    c[2].send("/rooms");
    assert_eq!(c[2].recv(), "notice rooms: #lobby (2), #rust (1)");
    c[0].send("/join #lobby");
    c[0].recv();
    c[2].recv();
    c[2].send("/rooms");
    assert_eq!(c[2].recv(), "notice rooms: #lobby (3)");
    server.stop();
}

#[test]
fn who_and_whois() {
    let (_pki, server, mut c) = chat_of(3);
    c[0].send("/nick zed");
    c[1].send("/nick Amy");
    // Each connection has its own reading thread: the renames are known
    // to have reached the chat only once each is answered.
    c[0].recv_until(|l| l == "notice you are now zed");
    c[1].recv_until(|l| l == "notice you are now Amy");
    c[2].send("/join #other");
    c[2].send("/who");
    let who = c[2].recv_until(|l| l.starts_with("notice in "));
    assert_eq!(who, format!("notice in #other (1): {}", c[2].nick));
    c[0].send("/who");
    let who = c[0].recv_until(|l| l.starts_with("notice in "));
    assert_eq!(who, "notice in #lobby (2): Amy, zed");
    let loud = c[2].nick.to_uppercase();
    c[0].send(&format!("/whois {loud}"));
    let whois = c[0].recv_until(|l| !l.contains("joined") && !l.contains(" left "));
    assert_eq!(whois, format!("notice {} is in #other", c[2].nick));
    c[0].send("/whois nobody");
    assert_eq!(c[0].recv(), "error no user named nobody is connected");
    c[0].send("/whois");
    assert_eq!(c[0].recv(), "error /whois needs a name: /whois NAME");
    server.stop();
}

#[test]
fn private_messages_reach_only_their_target() {
    let (_pki, server, mut c) = chat_of(3);
    c[1].send("/join #elsewhere");
    c[1].recv();
    c[0].recv();
    c[2].recv();
    let (a, b) = (c[0].nick.clone(), c[1].nick.clone());
    c[0].send(&format!("/msg {b} psst, a secret"));
    let line = format!("private {a} {b} psst, a secret");
    assert_eq!(c[1].recv(), line, "the target");
    assert_eq!(c[0].recv(), line, "the sender's confirmation");
    assert_nothing_before_marker(&mut c, 0, 2);
    server.stop();
}

#[test]
fn private_message_errors() {
    let (_pki, server, mut c) = chat_of(1);
    c[0].send("/msg nobody hello");
    assert_eq!(c[0].recv(), "error no user named nobody is connected");
    c[0].send("/msg");
    assert_eq!(
        c[0].recv(),
        "error /msg needs a name and a message: /msg NAME TEXT"
    );
    c[0].send("/msg someone");
    assert_eq!(
        c[0].recv(),
        "error /msg needs a name and a message: /msg NAME TEXT"
    );
    // A message to oneself arrives once.
    let me = c[0].nick.clone();
    c[0].send(&format!("/msg {me} note to self"));
    assert_eq!(c[0].recv(), format!("private {me} {me} note to self"));
    assert_nothing_before_marker(&mut c, 0, 0);
    server.stop();
}

#[test]
fn me_is_an_action_for_the_room() {
    let (_pki, server, mut c) = chat_of(2);
    c[0].send("/me waves");
    let line = format!("action {} waves", c[0].nick);
    assert_eq!(c[0].recv(), line);
    assert_eq!(c[1].recv(), line);
    c[0].send("/me");
    assert_eq!(c[0].recv(), "error /me needs some text: /me TEXT");
    server.stop();
}

#[test]
fn topics_are_shown_set_and_given_on_join() {
    let (pki, server, mut c) = chat_of(2);
    c[0].send("/topic");
    assert_eq!(
        c[0].recv(),
        "notice #lobby has no topic; set one with /topic TEXT"
    );
    c[0].send("/topic TLS, threads and Rust");
    let announced = format!(
        "notice {} set the topic of #lobby: TLS, threads and Rust",
        c[0].nick
    );
    assert_eq!(c[0].recv(), announced);
    assert_eq!(c[1].recv(), announced);
    c[1].send("/topic");
    assert_eq!(c[1].recv(), "notice topic of #lobby: TLS, threads and Rust");

    let late = TestClient::connect(server.addr, &pki.ca);
    assert_eq!(late.recv(), "notice topic of #lobby: TLS, threads and Rust");
    server.stop();
}

#[test]
fn help_lists_and_explains_commands() {
    let (_pki, server, mut c) = chat_of(1);
    c[0].send("/help");
    let list = c[0].recv();
    assert_eq!(
        list,
        "notice commands: /nick /join /rooms /who /whois /msg /me /topic /help /token /reclaim /quit"
    );
    for usage in [
        "/nick NAME",
        "/join #ROOM",
        "/rooms [PAGE]",
        "/who [PAGE]",
        "/whois NAME",
    ] {
        let line = c[0].recv();
        assert!(line.starts_with(&format!("notice {usage}: ")), "{line}");
    }
    for usage in [
        "/msg NAME TEXT",
        "/me TEXT",
        "/topic [TEXT]",
        "/help [COMMAND]",
        "/token",
        "/reclaim NICK SECRET",
        "/quit [REASON]",
    ] {
        let line = c[0].recv();
        assert!(line.starts_with(&format!("notice {usage}: ")), "{line}");
    }
    assert!(c[0]
        .recv()
        .starts_with("notice anything else you type is said to the room"));
    c[0].send("/help msg");
    assert_eq!(
        c[0].recv(),
        "notice /msg NAME TEXT: send TEXT to NAME alone, wherever they are"
    );
    c[0].send("/help frob");
    assert_eq!(
        c[0].recv(),
        "error no command frob: /help lists the commands"
    );
    server.stop();
}

#[test]
fn unknown_command_and_the_slash_escape() {
    let (_pki, server, mut c) = chat_of(1);
    c[0].send("/frob now");
    assert_eq!(
        c[0].recv(),
        "error unknown command /frob: /help lists the commands; to send a line that starts with /, type //"
    );
    c[0].send("//frob is not a command");
    assert_eq!(
        c[0].recv(),
        format!("chat {} /frob is not a command", c[0].nick)
    );
    server.stop();
}

#[test]
fn quit_with_a_reason_and_bye() {
    let (_pki, server, mut c) = chat_of(3);
    c[0].send("/quit gone fishing");
    assert_eq!(c[0].recv(), "notice Ciao, Buonanotte!");
    assert_eq!(c[0].next(), support::Incoming::Closed);
    assert_eq!(
        c[1].recv(),
        format!("notice {} quit: gone fishing", c[0].nick)
    );
    assert_eq!(
        c[2].recv(),
        format!("notice {} quit: gone fishing", c[0].nick)
    );
    c[1].send("bye");
    assert_eq!(c[1].recv(), "notice Ciao, Buonanotte!");
    assert_eq!(c[2].recv(), format!("notice {} quit", c[1].nick));
    server.stop();
}

#[test]
fn history_replays_exactly_the_last_lines_in_order_marked() {
    let limits = Limits {
        history: 3,
        ..test_limits()
    };
    let (pki, server, mut c) = chat_with(1, limits);
    let nick = c[0].nick.clone();
    for n in 1..=4 {
        c[0].send(&format!("line {n}"));
        c[0].recv();
    }
    c[0].send("/me stretches");
    c[0].recv();
    c[0].send("/msg nobody private things stay out");
    c[0].recv();

    let mut late = TestClient::connect(server.addr, &pki.ca);
    assert_eq!(late.recv(), format!("history chat {nick} line 3"));
    assert_eq!(late.recv(), format!("history chat {nick} line 4"));
    assert_eq!(late.recv(), format!("history action {nick} stretches"));
    // Nothing else was replayed: the next line is new.
    let late_nick = late.nick.clone();
    late.send("now");
    assert_eq!(late.recv(), format!("chat {late_nick} now"));

    // Another room has a history of its own.
    late.send("/join #quiet");
    assert_eq!(late.recv(), "notice you are in #quiet (1 person here)");
    late.send("first");
    assert_eq!(late.recv(), format!("chat {late_nick} first"));
    server.stop();
}

#[test]
fn history_zero_keeps_nothing() {
    let limits = Limits {
        history: 0,
        ..test_limits()
    };
    let (pki, server, mut c) = chat_with(1, limits);
    c[0].send("said before");
    c[0].recv();
    let mut late = TestClient::connect(server.addr, &pki.ca);
    let nick = late.nick.clone();
    late.send("hello");
    assert_eq!(late.recv(), format!("chat {nick} hello"));
    server.stop();
}

#[test]
fn escape_sequences_never_reach_another_user() {
    let (_pki, server, mut c) = chat_of(2);
    c[0].send("\x1b[2J\x1b]0;pwned\x07red \u{9b}31m text");
    let seen = c[1].recv();
    assert_eq!(seen, format!("chat {} [2J]0;pwnedred 31m text", c[0].nick));
    server.stop();
}

#[test]
fn big_rooms_do_not_announce_arrivals_and_departures() {
    let limits = Limits {
        announce_limit: 2,
        ..test_limits()
    };
    let (pki, server, mut c) = chat_with(2, limits);
    // A third person makes the room bigger than the limit: not announced.
    let third = TestClient::connect(server.addr, &pki.ca);
    assert_nothing_before_marker(&mut c, 1, 0);
    // Nor is a departure from it: once the server has let go of the
    // connection, the hub has handled it, and the marker comes next.
    drop(third);
    assert!(support::wait_until(|| server.open_connections() == 2));
    assert_nothing_before_marker(&mut c, 1, 0);
    // Back at the limit, departures are news again.
    let gone = c.pop().unwrap();
    let nick = gone.nick.clone();
    drop(gone);
    assert_eq!(c[0].recv(), format!("notice {nick} quit"));
    server.stop();
}

//! Rooms, topics, history, `/who` and `/rooms`, and what every session
//! goes through: help, quitting, refusals, shutdown, events in any order.

use super::*;
use crate::protocol::COMMANDS;
use std::time::{Duration, Instant};

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

/// Making rooms is bounded per address and minute, however many
/// connections the address opens; joining one that exists is not.
#[test]
fn one_address_makes_only_so_many_rooms_a_minute() {
    let mut h = Harness::new(ChatSettings {
        rooms_per_minute: 10,
        ..SETTINGS
    });
    let a = h.join(1);
    let b = ClientId(2);
    h.join_from(b, "192.0.2.8:4000".parse().unwrap(), None);
    h.send(b, "/join #kept");
    for n in 0..10 {
        let seen = h.send(a, &format!("/join #new{n}"));
        assert_eq!(
            seen[&a],
            [format!("notice you are in #new{n} (1 person here)")]
        );
    }
    let refused = "does not exist, and 10 rooms were made from your address in the last \
                   minute, the most it may: join one that exists, or wait a moment";
    h.expect(a, "/join #onemore", &[&format!("error #onemore {refused}")]);
    // Another connection from the same address is the same address.
    let again = h.join(3);
    h.expect(again, "/join #other", &[&format!("error #other {refused}")]);
    // A room that exists is still open to them, and others make their own.
    let seen = h.send(a, "/join #kept");
    assert_eq!(seen[&a], ["notice you are in #kept (2 people here)"]);
    let elsewhere = ClientId(4);
    h.join_from(elsewhere, "192.0.2.9:4000".parse().unwrap(), None);
    let seen = h.send(elsewhere, "/join #theirs");
    assert_eq!(
        seen[&elsewhere],
        ["notice you are in #theirs (1 person here)"]
    );
}

/// Every room's history together stays under its cap: the biggest rooms
/// lose their older lines first, a small room keeps its own, and a room
/// forgotten gives its bytes back.
#[test]
fn all_rooms_history_together_is_bounded_in_bytes() {
    let settings = ChatSettings {
        history: 50,
        history_bytes: 20_000,
        rooms_per_minute: 100,
        ..SETTINGS
    };
    let mut h = Harness::new(settings);
    let quiet = h.join(1);
    h.send(quiet, "/join #quiet");
    h.send(quiet, "a few words");
    let long = "x".repeat(90);
    for n in 0..30u64 {
        let id = h.join(10 + n);
        h.send(id, &format!("/join #busy{n}"));
        for _ in 0..20 {
            h.send(id, &long);
        }
        // Every room's lines are counted: 30 rooms of 20 long lines go
        // far past the cap, and cuts bring it back.
        h.assert_history_within(20_000, &format!("after room {n}"));
    }
    let newcomer = h.join(99);
    let seen = h.send(newcomer, "/join #quiet");
    assert!(
        seen[&newcomer]
            .iter()
            .any(|line| line.ends_with("a few words")),
        "{seen:?}"
    );
    // A room that empties is forgotten, and its history with it.
    let before = h.chat.history_total;
    h.send(ClientId(10), "/join #lobby");
    let after = h.chat.history_total;
    assert!(after < before, "{before} -> {after}");
}

#[test]
fn the_window_of_rooms_made_slides_with_time() {
    let start = Instant::now();
    let at = |secs: u64| start + Duration::from_secs(secs);
    let mut made = crate::chat::rooms::RoomsMade::default();
    for n in 0..10 {
        assert!(made.allow(at(n), 10), "room {n}");
    }
    assert!(!made.allow(at(30), 10));
    // A minute after the first, one more; after the second, another.
    assert!(made.allow(at(60), 10));
    assert!(!made.allow(at(60), 10));
    assert!(made.allow(at(61), 10));
    assert!(!made.allow(at(61), 10));
    // Long after, the whole allowance again.
    for n in 0..10 {
        assert!(made.allow(at(600 + n), 10), "room {n}");
    }
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
    assert_eq!(h.closed.get(&a), Some(&CloseReason::Quit));
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
    assert_eq!(h.closed.get(&a), Some(&CloseReason::Left));
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
        assert_eq!(h.closed.get(&id), Some(&CloseReason::Shutdown));
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

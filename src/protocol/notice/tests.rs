//! Every notice and refusal written as the server always has, read back
//! the same, and in another wording too.

use super::*;

/// One of each, with the text the server has always sent for it.
fn every_notice() -> Vec<(Notice<'static>, &'static str)> {
    vec![
        (
            Notice::YouAre {
                nick: "guest2",
                sessions: None,
            },
            "you are guest2",
        ),
        (
            Notice::YouAre {
                nick: "alice",
                sessions: Some(2),
            },
            "you are alice (2 sessions)",
        ),
        (Notice::YouAreNow { nick: "alice" }, "you are now alice"),
        (Notice::YouAreBack { nick: "alice" }, "you are alice again"),
        (
            Notice::YouAreAlready { nick: "Alice" },
            "you are already Alice",
        ),
        (
            Notice::YouAreIn {
                room: "#lobby",
                here: 2,
            },
            "you are in #lobby (2 people here)",
        ),
        (
            Notice::YouAreIn {
                room: "#rust",
                here: 1,
            },
            "you are in #rust (1 person here)",
        ),
        (
            Notice::AlreadyIn { room: "#rust" },
            "you are already in #rust",
        ),
        (
            Notice::Joined {
                nick: "guest8",
                room: "#lobby",
            },
            "guest8 joined #lobby",
        ),
        (
            Notice::Left {
                nick: "guest3",
                room: "#lobby",
            },
            "guest3 left #lobby",
        ),
        (
            Notice::Renamed {
                old: "guest1",
                new: "bob",
            },
            "guest1 is now bob",
        ),
        (
            Notice::Quit {
                nick: "alice",
                reason: None,
            },
            "alice quit",
        ),
        (
            Notice::Quit {
                nick: "alice",
                reason: Some("lunch time: back at 2"),
            },
            "alice quit: lunch time: back at 2",
        ),
        (
            Notice::Who(WhoList {
                room: "#lobby",
                count: 2,
                page: None,
                names: vec!["alice", "bob"],
                remark: None,
            }),
            "in #lobby (2): alice, bob",
        ),
        (
            Notice::Who(WhoList {
                room: "#lobby",
                count: 250,
                page: Some(Page {
                    first: 101,
                    last: 102,
                    next: Some(3),
                }),
                names: vec!["x", "y"],
                remark: None,
            }),
            "in #lobby (250), 101 to 102: x, y; /who 3 for more",
        ),
        (
            Notice::Who(WhoList {
                room: "#big",
                count: 250,
                page: Some(Page {
                    first: 201,
                    last: 201,
                    next: None,
                }),
                names: vec!["z"],
                remark: Some("not every server answered in time"),
            }),
            "in #big (250), 201 to 201: z (not every server answered in time)",
        ),
        (
            Notice::Who(WhoList {
                room: "#lobby",
                count: 1,
                page: None,
                names: vec!["guest7-1"],
                remark: Some("this server only: the link to the others is down"),
            }),
            "in #lobby (1): guest7-1 (this server only: the link to the others is down)",
        ),
        (
            Notice::Rooms(RoomList {
                page: None,
                rooms: vec![("#lobby", 1), ("#rust", 12)],
                remark: None,
            }),
            "rooms: #lobby (1), #rust (12)",
        ),
        (
            Notice::Rooms(RoomList {
                page: Some(Page {
                    first: 51,
                    last: 52,
                    next: Some(3),
                }),
                rooms: vec![("#a", 1), ("#b", 2)],
                remark: Some("not every server answered in time"),
            }),
            "rooms, 51 to 52: #a (1), #b (2); /rooms 3 for more \
             (not every server answered in time)",
        ),
        (
            Notice::Kicked {
                nick: "troll",
                room: "#rust",
                by: "alice",
                reason: None,
            },
            "troll was sent from #rust to the lobby by alice",
        ),
        (
            Notice::Kicked {
                nick: "troll",
                room: "#rust",
                by: "alice",
                reason: Some("spamming: again"),
            },
            "troll was sent from #rust to the lobby by alice: spamming: again",
        ),
        (
            Notice::Who(WhoList {
                room: "#empty",
                count: 0,
                page: None,
                names: vec![],
                remark: None,
            }),
            "in #empty (0): ",
        ),
    ]
}

fn every_refusal() -> Vec<(Refusal<'static>, &'static str)> {
    vec![
        (
            Refusal::ServerFull { max: 3 },
            "server full (3 clients); try again later",
        ),
        (
            Refusal::TooManyFromAddress {
                ip: "10.0.0.1",
                here: 2,
            },
            "too many connections from 10.0.0.1 (2); close one and try again",
        ),
        (
            Refusal::TooManySessions {
                nick: "alice",
                max: 3,
            },
            "alice has 3 sessions already, the most one person may have; \
             close one and try again",
        ),
        (
            Refusal::CannotReclaim { nick: "alice" },
            "cannot reclaim alice: no connection of yours holds it with that secret \
             (if it is free, take it with /nick alice)",
        ),
    ]
}

#[test]
fn every_notice_is_written_as_always_and_reads_back() {
    for (notice, text) in every_notice() {
        assert_eq!(notice.to_string(), text);
        assert_eq!(notice.write_in(&WORDING), text);
        assert_eq!(Notice::parse(text), Some(notice), "{text}");
    }
}

#[test]
fn every_refusal_is_written_as_always_and_reads_back() {
    for (refusal, text) in every_refusal() {
        assert_eq!(refusal.to_string(), text);
        assert_eq!(Refusal::parse(text), Some(refusal.clone()), "{text}");
        assert_eq!(refusal.passes(), !text.starts_with("cannot reclaim"));
    }
}

#[test]
fn other_notices_are_not_read_as_these() {
    for text in [
        "Welcome to the secure chat server!",
        "you are sending too fast: your lines are being delayed (none are lost)",
        "you are in no room",
        "alice is in #lobby, certificate CN=alice",
        "rooms: #lobby (1), rust (1)",
        "rooms: #lobby (x)",
        "topic of #lobby: alice joined #rust",
        "in #lobby (2): alice, not a nick",
        "in #lobby (x): alice",
        "alice joined rust",
        "server shutting down, goodbye",
        "",
    ] {
        assert_eq!(Notice::parse(text), None, "{text}");
    }
    assert_eq!(Refusal::parse("alice is already connected"), None);
    assert_eq!(Refusal::parse("cannot reclaim alice: nope"), None);
    // The nick said twice must be one nick.
    let two = "cannot reclaim alice: no connection of yours holds it with that secret \
               (if it is free, take it with /nick bob)";
    assert_eq!(Refusal::parse(two), None);
}

#[test]
fn a_nick_that_is_a_word_of_the_wording_has_both_readings() {
    let readings = Notice::readings_in(&WORDING, "you are now again");
    assert!(readings.contains(&Notice::YouAreNow { nick: "again" }));
    assert!(readings.contains(&Notice::YouAreBack { nick: "now" }));
    // A nick called `now` is still a name on arrival.
    assert_eq!(
        Notice::parse("you are now"),
        Some(Notice::YouAre {
            nick: "now",
            sessions: None
        })
    );
}

#[test]
fn another_wording_writes_and_reads_its_own_text() {
    let other = Wording {
        renamed: "{new} (was {old})",
        joined: "{room} welcomes {nick}",
        who: "{count} in {room}: {names}",
        separator: " & ",
        ..WORDING
    };
    for (notice, text) in every_notice() {
        let written = notice.write_in(&other);
        assert_eq!(
            Notice::parse_in(&other, &written),
            Some(notice),
            "{written}"
        );
        if written != text {
            // The server's wording does not read it as the same.
            assert_ne!(Notice::parse(&written), Notice::parse(text), "{written}");
        }
    }
    let renamed = Notice::Renamed { old: "a", new: "b" };
    assert_eq!(renamed.write_in(&other), "b (was a)");
}

#[test]
fn templates_never_put_two_slots_side_by_side() {
    let w = &WORDING;
    for template in [
        w.you_are,
        w.you_are_sessions,
        w.you_are_now,
        w.you_are_back,
        w.you_are_already,
        w.you_are_in,
        w.you_are_in_alone,
        w.already_in,
        w.joined,
        w.left,
        w.renamed,
        w.quit,
        w.quit_because,
        w.kicked,
        w.kicked_because,
        w.who,
        w.who_page,
        w.who_more,
        w.rooms,
        w.rooms_page,
        w.rooms_more,
        w.room_count,
        w.remark,
        w.server_full,
        w.too_many_from_address,
        w.too_many_sessions,
        w.cannot_reclaim,
    ] {
        assert!(!template.contains("}{"), "{template}");
        assert_eq!(template.matches('{').count(), template.matches('}').count());
    }
}

#[test]
fn pages_are_numbered_only_when_there_are_several() {
    assert_eq!(Page::of(1, 100, 100), None);
    assert_eq!(
        Page::of(1, 250, 100),
        Some(Page {
            first: 1,
            last: 100,
            next: Some(2)
        })
    );
    assert_eq!(
        Page::of(3, 250, 100),
        Some(Page {
            first: 201,
            last: 250,
            next: None
        })
    );
}

/// What the fuzz target checks, over every text above cut short, with a
/// character left out, or said twice: whatever reads as a notice or a
/// refusal writes back as text that reads as the same.
#[test]
fn what_reads_writes_back_as_itself_even_from_mangled_text() {
    let texts: Vec<String> = every_notice()
        .into_iter()
        .map(|(_, text)| text.to_string())
        .chain(
            every_refusal()
                .into_iter()
                .map(|(_, text)| text.to_string()),
        )
        .collect();
    let mut tried = 0;
    for text in &texts {
        let bounds: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        let mut variants = vec![format!("{text}{text}"), format!("{text}, {text}")];
        for pair in bounds.windows(2) {
            variants.push(text[..pair[0]].to_string());
            variants.push(format!("{}{}", &text[..pair[0]], &text[pair[1]..]));
            variants.push(format!("{}{}", &text[..pair[1]], &text[pair[0]..]));
        }
        for variant in &variants {
            tried += 1;
            if let Some(read) = Notice::parse(variant) {
                let written = read.to_string();
                assert!(
                    Notice::readings_in(&WORDING, &written).contains(&read),
                    "{variant:?} read as {read:?}, written {written:?}"
                );
            }
            if let Some(read) = Refusal::parse(variant) {
                assert_eq!(Refusal::parse(&read.to_string()), Some(read), "{variant:?}");
            }
        }
    }
    assert!(tried > 1000, "{tried}");
}

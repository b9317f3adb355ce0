//! A chat shared with other servers: names claimed and held everywhere,
//! private lines and questions to the others, the others out of reach.

use super::*;
use crate::chat::others::is_guest_name;
use crate::elsewhere::{Query, Reach, Sent, WhoPart};

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
    assert_eq!(
        h.asked(),
        vec![Output::Elsewhere(Ask::Release { name: name("dave") })]
    );
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

/// A certificate's name cannot change: found to be someone's on another
/// server, it closes its sessions here, and says why as a value too.
#[test]
fn a_certificates_name_taken_elsewhere_closes_its_sessions() {
    let mut h = Harness::shared();
    let carol = ClientId(4);
    h.join_as(carol, super::moderation::certificate("carol", b"carol"));
    assert_eq!(nick_of(&h, carol), "carol");
    let seen = h.by_others(|chat, out| chat.name_lost("carol", false, out));
    assert_eq!(
        seen[&carol][0],
        "error carol is connected on another server"
    );
    assert_eq!(h.closed.get(&carol), Some(&CloseReason::NameLost));
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
    let query = Query::Who {
        room: "#lobby".into(),
        names: WHO_PAGE,
    };
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
    assert_eq!(here, "1 guest7-1");
    let mut out = Vec::new();
    let parts = [here, "2 amy Zed".to_owned()];
    h.chat
        .answered(a, &query, None, &parts, Reach::Every, &mut out);
    assert_eq!(
        h.deliver(out)[&a],
        vec!["notice in #lobby (3): amy, guest7-1, Zed"]
    );
    // Rooms: counts of one room on several servers add up.
    assert_eq!(h.chat.local_answer(&Query::Rooms), "#lobby 1 #Tea 1");
    let parts = ["#lobby 1 #Tea 1".to_owned(), "#tea 4 #rust 2".to_owned()];
    let seen =
        h.by_others(|chat, out| chat.answered(a, &Query::Rooms, None, &parts, Reach::Partial, out));
    assert_eq!(
        seen[&a],
        vec![
            "notice rooms: #lobby (1), #rust (2), #Tea (5) \
             (not every server answered in time)"
        ]
    );
    let seen =
        h.by_others(|chat, out| chat.answered(a, &Query::Rooms, None, &parts, Reach::Cut, out));
    assert_eq!(
        seen[&a],
        vec!["notice rooms: #lobby (1), #rust (2), #Tea (5) (not every server's part fits in one answer)"]
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
        Query::Who {
            room: "#tea".into(),
            names: 200,
        },
        Query::Rooms,
        Query::Whois("x".into()),
    ] {
        assert_eq!(
            Query::decode(&query.encode()).map(|q| q.encode()),
            Some(query.encode())
        );
    }
}

/// One server's part of a `/who` answer, `COUNT NAME...`, as a server
/// with these people in the room sends it when asked for `asked` names.
fn part_of(people: &[String], asked: usize) -> String {
    let mut names: Vec<&str> = people.iter().map(String::as_str).collect();
    names.sort_by_key(|name| name.to_ascii_lowercase());
    names.truncate(asked);
    WhoPart {
        count: people.len(),
        names,
    }
    .encode()
}

#[test]
fn linked_who_asks_each_server_for_its_share_of_the_page_and_merges_them() {
    let mut h = Harness::shared();
    let ids: Vec<ClientId> = (1..=250).map(|n| h.join(n)).collect();
    let a = ids[0];
    h.asked();
    let here: Vec<String> = (1..=250).map(|n| format!("guest7-{n}")).collect();
    // Page 2 needs each server's first 200 names.
    assert!(h.send(a, "/who 2").is_empty());
    let query = |names| Query::Who {
        room: "#lobby".into(),
        names,
    };
    assert_eq!(
        h.asked(),
        vec![Output::Elsewhere(Ask::Query {
            id: a,
            query: query(200),
            page: Some("2".into()),
        })]
    );
    // This server: all 250 counted, the first 200 named, in the room's order.
    let part = h.chat.local_answer(&query(200));
    assert_eq!(part, part_of(&here, 200));
    let named = WhoPart::decode(&part, 200).expect("a part");
    assert_eq!((named.count, named.names.len()), (250, 200));
    // By key, not by number: `guest7-250` comes early, `guest7-99` last.
    assert!(named.names.contains(&"guest7-250") && !named.names.contains(&"guest7-99"));
    // Two other servers, whose names fall before and among this one's, in
    // both cases.
    let case = |n: usize, name: &str| {
        if n.is_multiple_of(2) {
            name.to_ascii_uppercase()
        } else {
            name.to_owned()
        }
    };
    let before: Vec<String> = (0..150).map(|n| case(n, &format!("ab{n:03}"))).collect();
    let among: Vec<String> = (0..300)
        .map(|n| case(n, &format!("guest7-{n:03}x")))
        .collect();
    let mut everyone: Vec<&String> = here.iter().chain(&before).chain(&among).collect();
    everyone.sort_by_key(|name| name.to_ascii_lowercase());
    for page in [2, 4, 7] {
        let asked = page * WHO_PAGE;
        let parts = [
            h.chat.local_answer(&query(asked)),
            part_of(&before, asked),
            part_of(&among, asked),
        ];
        let seen = h.by_others(|chat, out| {
            let page = page.to_string();
            chat.answered(a, &query(asked), Some(&page), &parts, Reach::Every, out);
        });
        let first = (page - 1) * WHO_PAGE;
        let names: Vec<&str> = everyone[first..first + WHO_PAGE]
            .iter()
            .map(|name| name.as_str())
            .collect();
        let more = if page < 7 {
            format!("; /who {} for more", page + 1)
        } else {
            String::new()
        };
        assert_eq!(
            seen[&a],
            vec![format!(
                "notice in #lobby (700), {} to {}: {}{more}",
                first + 1,
                first + WHO_PAGE,
                names.join(", ")
            )],
            "page {page}"
        );
    }
    // A page past what may be asked of the others: only the counts are
    // asked, and the answer says what can be.
    assert!(h.send(a, "/who 11").is_empty());
    assert_eq!(
        h.asked(),
        vec![Output::Elsewhere(Ask::Query {
            id: a,
            query: query(0),
            page: Some("11".into()),
        })]
    );
    assert_eq!(h.chat.local_answer(&query(0)), "250");
    let parts = ["250".to_owned(), "20000".to_owned()];
    let seen = h.by_others(|chat, out| {
        chat.answered(a, &query(0), Some("11"), &parts, Reach::Every, out);
    });
    assert_eq!(
        seen[&a],
        vec!["error /who shows the first 10 pages of a room on several servers"]
    );
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

/// The past of rooms that arrives from the other servers counts in the
/// history's cap as lines heard here do.
#[test]
fn the_past_of_linked_rooms_counts_in_the_history_cap() {
    let settings = ChatSettings {
        history: 50,
        history_bytes: 20_000,
        ..SETTINGS
    };
    let mut h = Harness {
        chat: Chat::shared(settings, "guest7-".to_owned()),
        ..Harness::new(settings)
    };
    let long: Arc<str> = Arc::from(format!("chat someone {}\n", "y".repeat(100)));
    for n in 0..20u64 {
        let id = h.join(10 + n);
        h.send(id, &format!("/join #past{n}"));
        let room = h.chat.room_named(&format!("#past{n}")).unwrap();
        h.by_others(|chat, out| {
            let told = Told::Recent {
                room,
                lines: vec![Arc::clone(&long); 20],
                topic: None,
                rules: None,
                fresh: false,
                waiting: Vec::new(),
            };
            chat.told(told, out);
        });
        h.assert_history_within(20_000, &format!("after room {n}"));
    }
}

/// A guest holding the name in a newcomer's certificate gives it up: the
/// others are asked to hold its new guest name before the old one goes,
/// so that neither is ever free elsewhere meanwhile.
#[test]
fn a_guest_giving_its_name_to_a_certificate_holds_the_new_one_first() {
    let mut h = Harness::shared();
    let a = h.join(1);
    h.send(a, "/nick carol");
    h.claimed("carol", Claim::Ours);
    h.asked();
    let carol = ClientId(4);
    h.join_as(carol, super::moderation::certificate("carol", b"carol"));
    assert_eq!(nick_of(&h, carol), "carol");
    let renamed = nick_of(&h, a);
    assert!(renamed.starts_with("guest7-"), "{renamed}");
    let asked = h.asked();
    assert_eq!(
        asked[..2],
        [
            Output::Elsewhere(Ask::Hold {
                name: name(&renamed)
            }),
            Output::Elsewhere(Ask::Release {
                name: name("carol")
            }),
        ],
        "{asked:?}"
    );
}

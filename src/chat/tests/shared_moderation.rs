//! Moderation shared with other servers: rules and server bans that
//! arrive from them replace this server's and hold for the people
//! here at once; and who makes a room, once its past is told.

use super::*;
use crate::elsewhere::{Act, Ask, Deed, Sent};
use crate::tls::Fingerprint;

/// A shared chat with `guest7-1` in `#den`, whose past the others have
/// told (`fresh`: nobody made it before, anywhere), and `guest7-2` there
/// too.
pub(super) fn den(fresh: bool) -> (Harness, ClientId, ClientId, RoomId) {
    let mut h = Harness::shared();
    let (a, b) = (h.join(1), h.join(2));
    h.send(a, "/join #den");
    let room = h.chat.room_named("#den").unwrap();
    h.by_others(|chat, out| {
        let told = Told::Recent {
            room,
            lines: Vec::new(),
            topic: None,
            rules: Some(None),
            fresh,
            waiting: Vec::new(),
        };
        chat.told(told, out);
    });
    h.send(b, "/join #den");
    (h, a, b, room)
}

pub(super) fn rules(h: &mut Harness, rules: Option<&str>) -> HashMap<ClientId, Vec<String>> {
    let told = Told::Rules {
        room: "#den".to_owned(),
        rules: rules.map(str::to_owned),
    };
    h.by_others(|chat, out| {
        chat.told(told, out);
    })
}

#[test]
fn a_room_is_its_makers_only_if_it_is_new_everywhere() {
    let (mut h, a, b, _) = den(true);
    assert_eq!(
        h.ask(b, "/bans")[0],
        "notice operators of #den: guest7-1 (while connected)"
    );
    // Its past says someone was there before: nobody here made it.
    let (mut h2, a2, _, _) = den(false);
    assert_eq!(h2.ask(a2, "/bans")[0], "notice operators of #den: none");
    // Nor is anyone its maker while the past is still to come.
    let c = h.join(3);
    h.send(c, "/join #new");
    assert_eq!(h.ask(c, "/bans")[0], "notice operators of #new: none");
    // Once it comes, new, with rules that name an operator: theirs.
    let room = h.chat.room_named("#new").unwrap();
    let key = crate::tls::Fingerprint::of_spki(b"someone");
    h.by_others(|chat, out| {
        let told = Told::Recent {
            room,
            lines: Vec::new(),
            topic: None,
            rules: Some(Some(format!("op {key}"))),
            fresh: true,
            waiting: Vec::new(),
        };
        chat.told(told, out);
    });
    // (Shown as one not connected: keys are shown to operators only.)
    assert_eq!(
        h.ask(c, "/bans")[0],
        "notice operators of #new: one not connected (by certificate)"
    );
    // Cut off from the others, a room made here is not decided later.
    h.set_reachable(false);
    h.send(a, "/join #alone");
    assert_eq!(
        h.ask(a, "/bans")[0],
        "notice operators of #alone: guest7-1 (while connected)"
    );
    // Nor made anyone's by key: the room may have operators elsewhere,
    // and a key saved now would reach them when the link is back.
    let carol = ClientId(4);
    h.join_as(carol, super::moderation::certificate("carol", b"carol key"));
    h.send(carol, "/join #cut");
    assert_eq!(
        h.ask(carol, "/bans")[0],
        "notice operators of #cut: carol (while connected)"
    );
    assert_eq!(super::moderation::saved_rules(&h, "#cut"), None);
}

#[test]
fn a_ban_that_arrives_sends_who_it_names_to_the_lobby_and_keeps_them_out() {
    let (mut h, a, b, _) = den(true);
    let seen = rules(&mut h, Some("ban - mallory guest7-2 spamming"));
    let sent = "notice guest7-2 was sent from #den to the lobby by mallory: banned: spamming";
    // Told at once (the room hears it once back from the others).
    assert_eq!(seen[&b][0], sent);
    assert!(seen[&b]
        .last()
        .unwrap()
        .starts_with("notice you are in #lobby ("));
    assert!(seen[&a].contains(&sent.to_owned()));
    h.expect(
        b,
        "/join #den",
        &["error you are banned from #den by mallory (until lifted): spamming"],
    );
    // Whole: rules without the ban lift it.
    rules(&mut h, None);
    let seen = h.send(b, "/join #den");
    assert!(
        seen[&b][0].starts_with("notice you are in #den ("),
        "{seen:?}"
    );
    // Guest operators, never shared, stay what they were.
    assert_eq!(
        h.ask(a, "/bans")[0],
        "notice operators of #den: guest7-1 (while connected)"
    );
}

#[test]
fn a_mute_that_arrives_holds_from_the_next_line() {
    let (mut h, _, b, _) = den(true);
    rules(&mut h, Some("mute - mallory guest7-2"));
    h.expect(
        b,
        "hello",
        &["error you are muted in #den by mallory (until lifted)"],
    );
    rules(&mut h, Some("topic-lock"));
    let seen = h.send(b, "hello");
    assert_eq!(seen[&b], vec!["chat guest7-2 hello"]);
}

#[test]
fn rules_that_do_not_read_are_refused_and_the_old_ones_kept() {
    let (mut h, _, b, _) = den(true);
    rules(&mut h, Some("mute - mallory guest7-2"));
    rules(&mut h, Some("mute whenever mallory guest7-2"));
    h.expect(
        b,
        "hello",
        &["error you are muted in #den by mallory (until lifted)"],
    );
}

#[test]
fn a_server_ban_that_arrives_disconnects_who_it_names() {
    let (mut h, a, b, _) = den(true);
    let seen = h.by_others(|chat, out| {
        chat.told(
            Told::ServerBans(Some("ban - root guest7-2,carol bye".into())),
            out,
        );
    });
    assert_eq!(
        seen[&b],
        vec!["error you are banned from this server by root (until lifted): bye"]
    );
    assert_eq!(h.closed.get(&b), Some(&CloseReason::Banned));
    assert!(seen[&a].contains(&"notice guest7-2 quit: banned from the server by root".to_owned()));
    // Whoever comes under a name it names is refused.
    let carol = Some(PeerCertificate {
        subject: "CN=carol".to_owned(),
        common_name: Some("carol".to_owned()),
        key: None,
    });
    let again = h.join_as(ClientId(5), carol);
    assert_eq!(
        again[&ClientId(5)],
        vec!["error you are banned from this server by root (until lifted): bye"]
    );
    // Lifted everywhere, lifted here.
    h.by_others(|chat, out| {
        chat.told(Told::ServerBans(None), out);
    });
    h.join(4);
}

#[test]
fn a_kick_of_someone_elsewhere_goes_to_their_server_which_does_it() {
    let (mut h, a, b, _) = den(true);
    h.asked();
    assert!(h.ask(a, "/kick zed be nice").is_empty());
    let asked = h.asked();
    let [Output::Elsewhere(Ask::Act { from, to, act })] = asked.as_slice() else {
        panic!("{asked:?}");
    };
    assert_eq!((*from, to.as_str()), (a, "zed"));
    let want = Act {
        by: "guest7-1".into(),
        server_op: false,
        key: None,
        deed: Deed::Kick("#den".into()),
        reason: Some("be nice".into()),
    };
    assert_eq!(**act, want);
    // Reached their server: the room hears it from there.
    let seen = h.by_others(|chat, out| chat.act_sent(a, "zed", &want, Sent::Delivered, out));
    assert!(seen.is_empty(), "{seen:?}");
    let seen = h.by_others(|chat, out| chat.act_sent(a, "zed", &want, Sent::NoOne, out));
    assert_eq!(seen[&a], vec!["error no user named zed is connected"]);

    // Here, from another server's operator of the room.
    let from_there = Act {
        by: "mallory".into(),
        ..want.clone()
    };
    let seen = h.by_others(|chat, out| {
        chat.told(Told::ActIn("guest7-2".into(), from_there), out);
    });
    let sent = "notice guest7-2 was sent from #den to the lobby by mallory: be nice";
    assert_eq!(seen[&b][0], sent);
    assert!(seen[&a].contains(&sent.to_owned()));
    // Not in that room any more: nothing happens.
    let again = Act {
        by: "mallory".into(),
        ..want.clone()
    };
    let seen = h.by_others(|chat, out| {
        chat.told(Told::ActIn("guest7-2".into(), again), out);
    });
    assert!(seen.is_empty(), "{seen:?}");

    // With the link down, it is refused at once.
    h.set_reachable(false);
    h.expect(
        a,
        "/kick zed",
        &[
            "error no user named zed is connected here, and the link to the other servers \
           is down: try again when it is back",
        ],
    );
}

#[test]
fn a_kick_from_elsewhere_is_obeyed_only_from_an_operator_of_the_room() {
    let (mut h, _, b, _) = den(false);
    let op = Fingerprint::of_spki(b"the operator's key");
    let other = Fingerprint::of_spki(b"someone else's key");
    rules(&mut h, Some(&format!("op {op}")));
    let kick = |key| Act {
        by: "mallory".into(),
        server_op: false,
        key,
        deed: Deed::Kick("#den".into()),
        reason: None,
    };
    // Whoever can write to Redis, naming nobody the rules name: ignored.
    for forged in [kick(None), kick(Some(other))] {
        let seen = h.by_others(|chat, out| {
            chat.told(Told::ActIn("guest7-2".into(), forged), out);
        });
        assert!(seen.is_empty(), "{seen:?}");
    }
    // The room's operator by key, or a server operator: done.
    let seen = h.by_others(|chat, out| {
        chat.told(Told::ActIn("guest7-2".into(), kick(Some(op))), out);
    });
    assert_eq!(
        seen[&b][0],
        "notice guest7-2 was sent from #den to the lobby by mallory"
    );
    h.send(b, "/join #den");
    // The bit that says a server operator sent it proves nothing: anyone
    // who can write to Redis sets it. Only a key of this server's own
    // operators does.
    let root_key = Fingerprint::of_spki(b"a server operator's key");
    h.chat.set_operators(vec![root_key]);
    for forged in [kick(None), kick(Some(other))] {
        let root = Act {
            by: "root".into(),
            server_op: true,
            ..forged
        };
        let seen = h.by_others(|chat, out| {
            chat.told(Told::ActIn("guest7-2".into(), root), out);
        });
        assert!(seen.is_empty(), "{seen:?}");
    }
    let root = Act {
        by: "root".into(),
        server_op: false,
        ..kick(Some(root_key))
    };
    let seen = h.by_others(|chat, out| {
        chat.told(Told::ActIn("guest7-2".into(), root), out);
    });
    assert_eq!(
        seen[&b][0],
        "notice guest7-2 was sent from #den to the lobby by root"
    );
}

#[test]
fn a_kill_from_elsewhere_disconnects_and_op_names_only_someone_here() {
    let (mut h, a, b, _) = den(true);
    let root_key = Fingerprint::of_spki(b"a server operator's key");
    h.chat.set_operators(vec![root_key]);
    // Only a server operator's kill is obeyed, whatever Redis carries:
    // one of this server's, by key; the bit that says so proves nothing.
    for (server_op, key) in [
        (false, None),
        (true, None),
        (true, Some(Fingerprint::of_spki(b"x"))),
    ] {
        let forged = Act {
            by: "mallory".into(),
            server_op,
            key,
            deed: Deed::Kill,
            reason: None,
        };
        let seen = h.by_others(|chat, out| {
            chat.told(Told::ActIn("guest7-2".into(), forged), out);
        });
        assert!(seen.is_empty(), "{seen:?}");
    }
    assert!(!h.closed.contains_key(&b));
    let kill = Act {
        by: "root".into(),
        server_op: true,
        key: Some(root_key),
        deed: Deed::Kill,
        reason: Some("enough".into()),
    };
    let seen = h.by_others(|chat, out| {
        chat.told(Told::ActIn("guest7-2".into(), kill), out);
    });
    assert_eq!(
        seen[&b],
        vec!["error you were disconnected by root: enough"]
    );
    assert_eq!(h.closed.get(&b), Some(&CloseReason::Killed));
    assert!(seen[&a].contains(&"notice guest7-2 quit: disconnected by root: enough".to_owned()));
    // Asked by a server operator here: told it was done.
    let kill = Act {
        by: "guest7-1".into(),
        server_op: true,
        key: None,
        deed: Deed::Kill,
        reason: None,
    };
    let seen = h.by_others(|chat, out| chat.act_sent(a, "zed", &kill, Sent::Delivered, out));
    assert_eq!(seen[&a], vec!["notice you disconnected zed"]);
    // Someone elsewhere cannot be made an operator from here.
    h.expect(
        a,
        "/op zed",
        &[
            "error zed is not connected to this server: /op names someone here, whose \
           certificate this server can read",
        ],
    );
}

#[test]
fn someone_elsewhere_is_invited_by_nick() {
    let (mut h, a, _, _) = den(true);
    h.send(a, "/mode +i");
    let seen = h.send(a, "/invite Zed");
    assert_eq!(seen[&a], vec!["notice guest7-1 invited Zed to #den"]);
    assert_eq!(
        h.saved.last(),
        Some(&Save::Rules {
            room: "#den".into(),
            rules: Some("invite-only\ninvited zed\nguests-only".into()),
        })
    );
}

#[test]
fn a_guest_operators_rules_are_taken_back_everywhere_when_the_guest_goes() {
    let (mut h, a, _, _) = den(true);
    h.send(a, "/mode +i");
    // Shared, a guest's rules go to the others (alone they would not be
    // saved at all: they end with the guest), marked as only guests'.
    let shared = "invite-only\nguests-only";
    assert_eq!(
        h.saved.last(),
        Some(&Save::Rules {
            room: "#den".into(),
            rules: Some(shared.into()),
        })
    );
    // They come back from the others, as every change does.
    rules(&mut h, Some(shared));
    h.left(a, None);
    assert_eq!(
        h.saved.last(),
        Some(&Save::Rules {
            room: "#den".into(),
            rules: None,
        })
    );
}

#[test]
fn a_guests_rules_from_elsewhere_hold_here_until_taken_back() {
    let (mut h, _, b, _) = den(false);
    rules(&mut h, Some("invite-only\nguests-only"));
    h.send(b, "/join #lobby");
    // A guest leaving here is not the guest who stands behind them.
    let c = h.join(3);
    h.left(c, None);
    h.expect(
        b,
        "/join #den",
        &["error #den is invite-only: an operator of it must /invite you"],
    );
    rules(&mut h, None);
    let seen = h.send(b, "/join #den");
    assert!(
        seen[&b][0].starts_with("notice you are in #den ("),
        "{seen:?}"
    );
}

#[test]
fn a_rooms_past_with_rules_that_make_no_sense_leaves_this_servers_rules() {
    let mut h = Harness::shared();
    let (a, b) = (h.join(1), h.join(2));
    h.chat
        .restore_rules("#den", "ban - mallory guest7-2 spamming")
        .unwrap();
    h.send(a, "/join #den");
    let room = h.chat.room_named("#den").unwrap();
    h.by_others(|chat, out| {
        let told = Told::Recent {
            room,
            lines: Vec::new(),
            topic: None,
            rules: None,
            fresh: false,
            waiting: Vec::new(),
        };
        chat.told(told, out);
    });
    h.expect(
        b,
        "/join #den",
        &["error you are banned from #den by mallory (until lifted): spamming"],
    );
}

#[test]
fn shared_rules_are_bounded_in_bytes_and_reasons() {
    let (mut h, a, _, _) = den(true);
    let long = "x".repeat(201);
    let seen = h.send(a, &format!("/ban zed {long}"));
    assert_eq!(
        seen[&a],
        vec!["error that reason is 201 bytes; linked servers keep at most 200: say it shorter"]
    );
    // Bans with the longest reasons fill the rules before the count does.
    let reason = "y".repeat(200);
    let mut refused = None;
    for n in 0..100 {
        let seen = h.send(a, &format!("/ban zed{n} {reason}"));
        if seen[&a][0].starts_with("error") {
            refused = Some((n, seen[&a][0].clone()));
            break;
        }
    }
    let (n, why) = refused.expect("never refused");
    assert!(n > 50, "refused at {n}");
    assert!(
        why.starts_with("error the rules of #den would take ")
            && why.ends_with(
                "bytes; linked servers keep at most 16384: lift some bans or mutes first, \
                 or give shorter reasons"
            ),
        "{why}"
    );
    let Some(Save::Rules {
        rules: Some(text), ..
    }) = h.saved.last()
    else {
        panic!("{:?}", h.saved.last());
    };
    assert!(text.len() <= 16 * 1024);

    // A server alone keeps any reason that fits a line, as before.
    let mut alone = Harness::new(SETTINGS);
    let op = alone.join(1);
    alone.send(op, "/join #den");
    let seen = alone.send(op, &format!("/ban zed {long}"));
    assert!(
        seen[&op][0].starts_with("notice guest1 banned zed"),
        "{seen:?}"
    );
}

#[test]
fn rules_from_elsewhere_over_the_bounds_are_refused_and_the_old_ones_kept() {
    let (mut h, _, b, _) = den(true);
    rules(&mut h, Some("mute - mallory guest7-2"));
    let long = format!("ban - mallory guest7-1 {}", "z".repeat(201));
    rules(&mut h, Some(&long));
    let many: Vec<String> = (0..101).map(|n| format!("invited zed{n}")).collect();
    rules(&mut h, Some(&many.join("\n")));
    h.expect(
        b,
        "hello",
        &["error you are muted in #den by mallory (until lifted)"],
    );
    // Server bans too: a reason longer than any server takes.
    h.by_others(|chat, out| {
        chat.told(
            Told::ServerBans(Some(format!("ban - root guest7-2 {}", "z".repeat(201)))),
            out,
        );
    });
    assert!(!h.closed.contains_key(&b));
}

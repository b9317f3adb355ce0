//! Moderation against the ways round it: who a ban names and where its
//! rules stop, guests' rules and names, and the bounds on what one operator
//! can make the chat keep.

use super::moderation::{certificate, from, harness, saved_rules};
use super::*;

#[test]
fn a_ban_holds_for_room_operators_but_not_for_server_operators() {
    let (mut h, _) = harness();
    h.chat
        .set_operators(vec![Fingerprint::of_spki(b"root key")]);
    let (alice, bob, root) = (ClientId(1), ClientId(2), ClientId(3));
    h.join_as(alice, certificate("alice", b"alice key"));
    h.join_as(bob, certificate("bob", b"bob key"));
    h.join_from(
        root,
        from("198.51.100.1:4000"),
        certificate("root", b"root key"),
    );
    h.send(alice, "/join #r");
    h.send(bob, "/join #r");
    h.send(alice, "/op bob");
    let seen = h.send(bob, "/ban alice 1d");
    assert!(
        seen[&alice][1].starts_with("notice alice was sent from #r"),
        "{seen:?}"
    );
    let refused = h.ask(alice, "/join #r");
    assert_eq!(refused, ["error you are banned from #r by bob (1d left)"]);
    // A server operator is above a room's bans (here, one set on their
    // address while they were away), and lifts them.
    h.left(root, None);
    h.send(bob, "/ban 198.51.100.1");
    let root = ClientId(4);
    h.join_from(
        root,
        from("198.51.100.1:4000"),
        certificate("root", b"root key"),
    );
    assert!(h.ask(root, "/join #r")[0].starts_with("notice you are in #r"));
    h.send(root, "/unban alice");
    assert!(h.ask(alice, "/join #r")[0].starts_with("notice you are in #r"));
}

#[test]
fn rules_only_guests_made_go_with_them_so_no_name_is_locked_for_good() {
    let (mut h, _) = harness();
    let (a, b) = (h.join(1), h.join(2));
    h.send(a, "/join #x");
    h.send(a, "/mode +i");
    h.send(a, "/mode +t");
    // A guest's rules are not saved.
    assert_eq!(saved_rules(&h, "#x"), Some(None));
    h.left(a, None);
    assert!(h.chat.moderation.rooms.is_empty());
    // The room is the next comer's, as any room nobody moderates.
    assert!(h.ask(b, "/join #x")[0].starts_with("notice you are in #x"));
    assert!(h.ask(b, "/bans")[0].ends_with("#x: guest2 (while connected)"));
    // What someone with a certificate set stays, and an empty room left
    // invite-only with nobody to moderate it is still the next comer's.
    let root = ClientId(3);
    h.join_as(root, certificate("root", b"root key"));
    h.chat
        .set_operators(vec![Fingerprint::of_spki(b"root key")]);
    h.send(root, "/join #x");
    h.send(b, "/mode +i");
    h.send(root, "/mode +t");
    let saved = saved_rules(&h, "#x").flatten();
    assert_eq!(saved.as_deref(), Some("invite-only\ntopic-lock"));
    h.send(root, "/join #lobby");
    h.left(b, None);
    assert!(h.chat.moderation.rooms["#x"].topic_locked);
    let c = h.join(4);
    assert!(h.ask(c, "/join #x")[0].starts_with("notice you are in #x"));
    assert!(h.ask(c, "/topic mine")[0].starts_with("notice guest4 set the topic"));
}

#[test]
fn a_certificates_name_is_its_holders_even_if_a_guest_took_it() {
    let (mut h, _) = harness();
    let guest = h.join(1);
    h.send(guest, "/nick root");
    let root = ClientId(2);
    let seen = h.join_as(root, certificate("root", b"root key"));
    assert_eq!(
        seen[&guest][0],
        "error root is the name in the certificate of someone who just connected, \
         and a certificate's name is its holder's: you are guest1 now"
    );
    assert_eq!(seen[&guest][1], "notice you are now guest1");
    assert_eq!(seen[&root][0], format!("notice {}", protocol::WELCOME));
    assert_eq!(nick_of(&h, root), "root");
    assert_eq!(nick_of(&h, guest), "guest1");
}

#[test]
fn one_operator_cannot_grow_a_rooms_rules_without_end() {
    let (mut h, _) = harness();
    let op = ClientId(1);
    h.join_as(op, certificate("op", b"op key"));
    h.send(op, "/join #r");
    for n in 0..100 {
        let seen = h.ask(op, &format!("/ban x{n}"));
        assert!(seen[0].starts_with("notice op banned"), "{seen:?}");
    }
    h.expect(
        op,
        "/ban one-more",
        &["error #r has 100 bans, the most a room keeps: /unban some first"],
    );
    h.send(op, "/unban x0");
    assert!(h.ask(op, "/ban one-more")[0].starts_with("notice op banned one-more"));
    // Nor can a guest, by making rooms: they moderate ten at most.
    let guest = h.join(2);
    for n in 0..10 {
        assert_eq!(h.ask(guest, &format!("/join #g{n}")).len(), 1);
    }
    let told = h.ask(guest, "/join #g10");
    assert_eq!(
        told[1],
        "notice #g10 has no operator: you are one of 10 rooms already, the most a guest may be"
    );
}

#[test]
fn a_ban_by_nick_holds_for_the_key_and_every_address_of_the_one_named() {
    let (mut h, _) = harness();
    let op = ClientId(1);
    h.join_from(op, from("192.0.2.1:4000"), certificate("op", b"op key"));
    h.send(op, "/join #r");
    // Alice, from two places at once.
    let (home, work, alice) = (ClientId(2), ClientId(3), certificate("alice", b"alice"));
    h.join_from(home, from("198.51.100.2:4000"), alice.clone());
    h.join_from(work, from("203.0.113.3:4000"), alice);
    h.send(home, "/join #r");
    h.send(op, "/ban alice");
    // Without her certificate, from either place, she is still banned.
    h.left(home, None);
    h.left(work, None);
    for (n, address) in [(4, "198.51.100.2:5000"), (5, "203.0.113.3:5000")] {
        let guest = ClientId(n);
        h.join_from(guest, from(address), None);
        assert!(
            h.ask(guest, "/join #r")[0].starts_with("error you are banned from #r by op"),
            "from {address}"
        );
    }
    // A ban of one address holds for a person with a session there,
    // whichever of their sessions moves them.
    let (bob, away, key) = (ClientId(6), ClientId(7), certificate("bob", b"bob"));
    h.join_from(bob, from("198.51.100.6:4000"), key.clone());
    h.join_from(away, from("203.0.113.7:4000"), key);
    h.send(op, "/ban 203.0.113.7");
    assert!(h.ask(bob, "/join #r")[0].starts_with("error you are banned from #r"));
}

#[test]
fn a_server_operator_cannot_be_muted_by_a_room_operator_even_when_away() {
    let (mut h, _) = harness();
    let key = Fingerprint::of_spki(b"root key");
    h.chat.set_operators(vec![key]);
    let a = h.join(1);
    h.send(a, "/join #r");
    h.expect(
        a,
        &format!("/mute {key}"),
        &[&format!("error {key} is a server operator's key")],
    );
    // By the nick alone, while away: it takes, but does not hold for them.
    h.send(a, "/mute root");
    let root = ClientId(2);
    h.join_as(root, certificate("root", b"root key"));
    h.send(root, "/join #r");
    assert_eq!(h.ask(root, "still here"), ["chat root still here"]);
    assert!(!h.chat.people["root"].muted);
}

#[test]
fn an_invitation_to_a_guest_ends_with_the_guest() {
    let (mut h, _) = harness();
    let op = ClientId(1);
    h.join_as(op, certificate("op", b"op key"));
    h.send(op, "/join #club");
    h.send(op, "/mode +i");
    let guest = h.join(2);
    h.send(op, "/invite guest2");
    assert_eq!(
        saved_rules(&h, "#club").unwrap().unwrap().lines().last(),
        Some("invite-only"),
        "an invitation by nick is not saved"
    );
    h.left(guest, None);
    let next = h.join(3);
    h.send(next, "/nick guest2");
    assert!(h.ask(next, "/join #club")[0].starts_with("error #club is invite-only"));
    // Nor does it follow a new nick.
    h.send(op, "/invite guest2");
    h.send(next, "/nick other");
    h.send(next, "/nick guest2");
    assert!(h.ask(next, "/join #club")[0].starts_with("error #club is invite-only"));
}

#[test]
fn only_operators_read_the_keys_and_addresses_of_those_banned() {
    let (mut h, _) = harness();
    let (a, b, troll, carol) = (h.join(1), h.join(2), ClientId(3), ClientId(4));
    h.join_from(troll, from("192.0.2.3:4000"), None);
    h.join_as(carol, certificate("carol", b"carol key"));
    for id in [a, b, troll] {
        h.send(id, "/join #r");
    }
    h.send(a, "/mute carol");
    let seen = h.send(a, "/ban guest3 go away");
    assert_eq!(
        seen[&b][0],
        "notice guest1 banned guest3 from #r (until lifted): go away"
    );
    h.send(a, "/ban 192.0.2.99");
    let listed = h.ask(b, "/bans");
    assert_eq!(
        listed[1],
        "notice bans in #r: guest3 by guest1 (until lifted): go away; \
         someone (by address or key) by guest1 (until lifted)"
    );
    // Her nick, once, though the mute names her key too.
    assert_eq!(
        listed[2],
        "notice mutes in #r: carol by guest1 (until lifted)"
    );
    assert!(h.ask(a, "/bans")[1].contains("guest3, 192.0.2.3 by guest1"));
}

#[test]
fn deop_takes_a_key_for_an_operator_who_is_away() {
    let (mut h, _) = harness();
    let (alice, bob) = (ClientId(1), ClientId(2));
    h.join_as(alice, certificate("alice", b"alice key"));
    h.join_as(bob, certificate("bob", b"bob key"));
    h.send(alice, "/join #k");
    h.send(bob, "/join #k");
    h.send(alice, "/op bob");
    h.left(alice, None);
    let key = Fingerprint::of_spki(b"alice key");
    let seen = h.send(bob, &format!("/deop {key}"));
    assert_eq!(
        seen[&bob],
        [format!("notice bob made {key} no longer an operator of #k")]
    );
    let bob_key = Fingerprint::of_spki(b"bob key");
    assert_eq!(h.chat.moderation.rooms["#k"].ops, [bob_key]);
}

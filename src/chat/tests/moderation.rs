//! Moderation: who may, who may not, and what follows: kicks, bans by
//! nick, key and address (an IPv6 /64), durations that end, mutes,
//! invite-only rooms, locked topics, server operators, and the rules'
//! text for the store and back.

use super::*;
use crate::chat::moderation::RoomRules;
use crate::protocol::MODERATION_COMMANDS;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

/// A chat whose clock the test moves: Unix seconds in `now`.
fn harness() -> (Harness, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(1_800_000_000));
    let mut h = Harness::new(SETTINGS);
    let read = Arc::clone(&now);
    h.chat.set_clock(Clock::new(move || {
        UNIX_EPOCH + Duration::from_secs(read.load(Ordering::SeqCst))
    }));
    (h, now)
}

fn certificate(cn: &str, key: &[u8]) -> Option<PeerCertificate> {
    Some(PeerCertificate {
        subject: format!("CN={cn}"),
        common_name: Some(cn.to_string()),
        key: Some(Fingerprint::of_spki(key)),
    })
}

fn from(address: &str) -> SocketAddr {
    address.parse().unwrap()
}

/// The last rules the chat asked to save for `room`.
fn saved_rules(h: &Harness, room: &str) -> Option<Option<String>> {
    h.saved.iter().rev().find_map(|save| match save {
        Save::Rules { room: key, rules } if key == room => Some(rules.clone()),
        _ => None,
    })
}

#[test]
fn whoever_makes_a_room_moderates_it_and_nobody_else_does() {
    let (mut h, _) = harness();
    let (a, b) = (h.join(1), h.join(2));
    h.send(a, "/join #rust");
    h.send(b, "/join #rust");
    assert_eq!(
        h.ask(b, "/bans")[0],
        "notice operators of #rust: guest1 (while connected)"
    );
    h.expect(
        b,
        "/kick guest1",
        &["error you are not an operator of #rust: /bans lists who is"],
    );
    h.expect(
        b,
        "/kill guest1",
        &[
            "error only server operators may do that: their keys are in the server's \
           --operators file",
        ],
    );
    // Nobody makes the lobby, and nobody is sent away from it.
    h.send(a, "/join #lobby");
    h.send(b, "/join #lobby");
    h.expect(
        a,
        "/kick guest2",
        &["error you are not an operator of #lobby: /bans lists who is"],
    );
    // An operator by nick is one only while connected under it: the
    // room, empty and without operators, is the next comer's.
    h.send(a, "/join #rust");
    h.send(a, "/nick alice");
    h.send(b, "/join #rust");
    let refused = h.ask(a, "/kick guest2");
    assert!(
        refused[0].starts_with("error you are not an operator"),
        "{refused:?}"
    );
    h.left(b, None);
    h.send(a, "/join #lobby");
    h.send(a, "/join #rust");
    assert_eq!(
        h.ask(a, "/bans")[0],
        "notice operators of #rust: alice (while connected)"
    );
    // /help tells where moderation is explained, and that explains it.
    let help = h.ask(a, "/help");
    assert!(help
        .last()
        .unwrap()
        .ends_with("/help moderation lists what operators may do"));
    let help = h.ask(a, "/help moderation");
    assert_eq!(help.len(), MODERATION_COMMANDS.len() + 2);
    assert!(help[0].starts_with("notice moderation: /op /deop /kick /ban"));
    assert!(help[1].starts_with("notice whoever makes a room"));
    assert!(h.ask(a, "/help kill")[0].starts_with("notice /kill NICK [REASON]: "));
}

#[test]
fn a_kick_sends_to_the_lobby_and_tells_the_room_why() {
    let (mut h, _) = harness();
    let (a, b, c) = (h.join(1), h.join(2), h.join(3));
    for id in [a, b, c] {
        h.send(id, "/join #rust");
    }
    let seen = h.send(a, "/kick guest2 calm down");
    let told = "notice guest2 was sent from #rust to the lobby by guest1: calm down";
    for id in [a, c] {
        assert_eq!(seen[&id], [told]);
    }
    assert_eq!(seen[&b][0], told);
    assert!(
        seen[&b][1].starts_with("notice you are in #lobby"),
        "{seen:?}"
    );
    assert_eq!(h.rooms[&b], h.chat.room_named("#lobby").unwrap());
    // A kick is not a ban.
    let seen = h.send(b, "/join #rust");
    assert_eq!(seen[&b][0], "notice you are in #rust (3 people here)");
    h.expect(
        a,
        "/kick nobody",
        &["error no user named nobody is connected"],
    );
    h.send(c, "/join #lobby");
    h.expect(a, "/kick guest3", &["error guest3 is not in #rust"]);
    h.expect(a, "/kick guest1", &["error that would name you yourself"]);
}

#[test]
fn a_ban_keeps_out_until_it_ends_and_says_for_how_long() {
    let (mut h, now) = harness();
    let (a, b) = (h.join(1), ClientId(2));
    h.join_from(b, from("192.0.2.2:4000"), None);
    h.send(a, "/join #rust");
    h.send(b, "/join #rust");
    let seen = h.send(a, "/ban guest2 10m spamming");
    assert_eq!(
        seen[&a],
        [
            "notice guest1 banned guest2 from #rust (10m left): spamming",
            "notice guest2 was sent from #rust to the lobby by guest1: banned: spamming",
        ]
    );
    assert_eq!(h.rooms[&b], h.chat.room_named("#lobby").unwrap());
    h.expect(
        b,
        "/join #rust",
        &["error you are banned from #rust by guest1 (10m left): spamming"],
    );
    now.fetch_add(290, Ordering::SeqCst);
    h.expect(
        b,
        "/join #rust",
        &["error you are banned from #rust by guest1 (5m 10s left): spamming"],
    );
    // Only a guest operator made them: they are not saved (they end
    // when guest1 goes), but the operators read the address banned.
    assert_eq!(saved_rules(&h, "#rust"), Some(None));
    let listed = h.ask(a, "/bans");
    assert_eq!(
        listed[1],
        "notice bans in #rust: guest2, 192.0.2.2 by guest1 (5m 10s left): spamming"
    );
    // Ended: let in, and dropped from what is saved.
    now.fetch_add(310, Ordering::SeqCst);
    let seen = h.send(b, "/join #rust");
    assert_eq!(seen[&b][0], "notice you are in #rust (2 people here)");
    // Nothing left to keep (its operator is one by nick).
    assert_eq!(saved_rules(&h, "#rust"), Some(None));
    // Without a duration it lasts until lifted.
    h.send(a, "/ban guest2");
    now.fetch_add(365 * 86_400, Ordering::SeqCst);
    let refused = h.ask(b, "/join #rust");
    assert_eq!(
        refused,
        ["error you are banned from #rust by guest1 (until lifted)"]
    );
    let seen = h.send(a, "/unban guest2");
    assert_eq!(
        seen[&a],
        ["notice guest1 lifted the ban on guest2 in #rust"]
    );
    let seen = h.send(b, "/join #rust");
    assert!(seen[&b][0].starts_with("notice you are in #rust"));
    h.expect(a, "/unban guest2", &["error no ban in #rust names guest2"]);
}

#[test]
fn bans_name_keys_and_addresses_and_an_ipv6_ban_covers_its_64() {
    let (mut h, _) = harness();
    let op = ClientId(1);
    h.join_as(op, certificate("op", b"op key"));
    h.send(op, "/join #r");
    // A certificate holder is banned by key as well as by name.
    let alice = ClientId(2);
    h.join_as(alice, certificate("alice", b"alice key"));
    h.send(alice, "/join #r");
    let key = Fingerprint::of_spki(b"alice key");
    let seen = h.send(op, "/ban alice");
    assert_eq!(
        seen[&op][0],
        "notice op banned alice from #r (until lifted)"
    );
    // Her key is in what the operators read (not the address she
    // shares with op).
    let listed = h.ask(op, "/bans");
    assert!(
        listed[1].contains(&format!("alice, {key} by op")),
        "{listed:?}"
    );
    // Her key, on another connection, is still her.
    h.left(alice, None);
    let again = ClientId(3);
    h.join_as(again, certificate("alice", b"alice key"));
    let refused = h.ask(again, "/join #r");
    assert_eq!(
        refused,
        ["error you are banned from #r by op (until lifted)"]
    );
    h.send(op, "/unban alice");
    h.send(op, &format!("/ban {key} for reasons"));
    assert_eq!(
        h.ask(again, "/join #r"),
        ["error you are banned from #r by op (until lifted): for reasons"]
    );
    // A guest is banned by address; for IPv6, the whole /64.
    let troll = ClientId(4);
    h.join_from(troll, from("[2001:db8::1]:4000"), None);
    h.send(troll, "/join #r");
    let seen = h.send(op, "/ban guest4");
    assert_eq!(
        seen[&op][0],
        "notice op banned guest4 from #r (until lifted)"
    );
    assert!(h.ask(op, "/bans")[1].contains("guest4, 2001:db8::/64 by op"));
    let neighbour = ClientId(5);
    h.join_from(neighbour, from("[2001:db8::ffff]:4000"), None);
    assert!(h.ask(neighbour, "/join #r")[0].starts_with("error you are banned from #r"));
    let other_net = ClientId(6);
    h.join_from(other_net, from("[2001:db8:0:1::1]:4000"), None);
    assert!(h.ask(other_net, "/join #r")[0].starts_with("notice you are in #r"));
    // An IPv4 address as typed.
    let v4 = ClientId(7);
    h.join_from(v4, from("192.0.2.8:4000"), None);
    h.send(op, "/ban 192.0.2.8 1h");
    assert_eq!(
        h.ask(v4, "/join #r"),
        ["error you are banned from #r by op (1h left)"]
    );
    h.expect(
        op,
        "/ban no!pe",
        &[
            "error \"no!pe\" is neither a nick (only letters, digits, _ and - are allowed), \
           nor a sha256: key, nor an IP address",
        ],
    );
}

#[test]
fn a_mute_refuses_lines_and_actions_but_lets_one_read() {
    let (mut h, now) = harness();
    let (a, b, c) = (h.join(1), ClientId(2), h.join(3));
    h.join_from(b, from("192.0.2.2:4000"), None);
    for id in [a, b, c] {
        h.send(id, "/join #r");
    }
    let seen = h.send(a, "/mute guest2 1m shouting");
    assert_eq!(
        seen[&b],
        ["notice guest1 muted guest2 in #r (1m left): shouting"]
    );
    let muted = "error you are muted in #r by guest1 (1m left): shouting";
    h.expect(b, "hello", &[muted]);
    h.expect(b, "/me waves", &[muted]);
    h.expect(b, "/topic mine", &[muted]);
    assert!(h.ask(b, "/who")[0].starts_with("notice in #r (3)"));
    let seen = h.send(a, "still here");
    assert_eq!(seen[&b], ["chat guest1 still here"]);
    assert_eq!(h.ask(c, "free"), ["chat guest3 free"]);
    // Elsewhere, they speak.
    h.send(b, "/join #lobby");
    assert_eq!(h.ask(b, "free"), ["chat guest2 free"]);
    h.send(b, "/join #r");
    h.expect(b, "hello", &[muted]);
    now.fetch_add(61, Ordering::SeqCst);
    let seen = h.send(b, "hello again");
    assert_eq!(seen[&a], ["chat guest2 hello again"]);
    assert!(!h.chat.people["guest2"].muted);
    // And until lifted.
    h.send(a, "/mute guest2");
    h.expect(
        b,
        "x",
        &["error you are muted in #r by guest1 (until lifted)"],
    );
    let seen = h.send(a, "/unmute guest2");
    assert_eq!(seen[&b], ["notice guest1 unmuted guest2 in #r"]);
    assert_eq!(h.ask(b, "x"), ["chat guest2 x"]);
}

#[test]
fn an_invite_only_room_lets_in_its_operators_and_those_invited_once() {
    let (mut h, _) = harness();
    let (a, b) = (h.join(1), h.join(2));
    h.send(a, "/join #club");
    h.expect(
        a,
        "/mode",
        &["notice #club has no modes (+i invite-only, +t topic lock)"],
    );
    let seen = h.send(a, "/mode +i");
    assert_eq!(seen[&a], ["notice guest1 made #club invite-only"]);
    h.expect(
        b,
        "/join #club",
        &["error #club is invite-only: an operator of it must /invite you"],
    );
    let seen = h.send(a, "/invite guest2");
    assert_eq!(seen[&a], ["notice guest1 invited guest2 to #club"]);
    assert_eq!(
        seen[&b],
        ["notice guest1 invited you to #club: /join #club to go there"]
    );
    assert!(h.ask(b, "/join #club")[0].starts_with("notice you are in #club"));
    h.send(b, "/join #lobby");
    assert!(h.ask(b, "/join #club")[0].starts_with("error #club is invite-only"));
    h.expect(
        a,
        "/mode +i",
        &["error nothing to change: modes of #club: invite-only (+i)"],
    );
    h.send(a, "/mode -i");
    assert!(h.ask(b, "/join #club")[0].starts_with("notice you are in #club"));
}

#[test]
fn a_locked_topic_is_set_by_operators_only() {
    let (mut h, _) = harness();
    let (a, b) = (h.join(1), h.join(2));
    h.send(a, "/join #r");
    h.send(b, "/join #r");
    h.send(a, "/mode +t");
    h.expect(
        b,
        "/topic mine now",
        &["error the topic of #r is locked: only its operators may set it"],
    );
    let seen = h.send(a, "/topic ours");
    assert_eq!(seen[&b], ["notice guest1 set the topic of #r: ours"]);
    h.expect(b, "/topic", &["notice topic of #r: ours"]);
    h.send(a, "/mode -t");
    assert_eq!(
        h.ask(b, "/topic theirs"),
        ["notice guest2 set the topic of #r: theirs"]
    );
}

#[test]
fn an_operator_by_key_stays_one_and_names_others() {
    let (mut h, _) = harness();
    let alice = ClientId(1);
    h.join_as(alice, certificate("alice", b"alice key"));
    let guest = h.join(2);
    h.send(alice, "/join #k");
    h.send(alice, "/join #lobby");
    // Empty, but not ownerless: the next comer is not its operator (and
    // is not shown her key: that is for operators).
    h.send(guest, "/join #k");
    let key = Fingerprint::of_spki(b"alice key");
    assert_eq!(h.ask(guest, "/bans")[0], "notice operators of #k: alice");
    h.send(alice, "/join #k");
    let seen = h.send(alice, "/op guest2");
    assert_eq!(
        seen[&guest],
        ["notice alice made guest2 an operator of #k (while connected under that name)"]
    );
    h.send(guest, "/mode +t");
    let listed = h.ask(guest, "/bans");
    assert_eq!(
        listed,
        [
            format!("notice operators of #k: alice ({key}); guest2 (while connected)"),
            "notice bans in #k: none".to_owned(),
            "notice mutes in #k: none".to_owned(),
            "notice invited to #k: none".to_owned(),
            "notice modes of #k: topic locked (+t)".to_owned(),
        ]
    );
    h.send(alice, "/deop guest2");
    assert!(h.ask(guest, "/mode -t")[0].starts_with("error you are not an operator"));
    h.expect(
        alice,
        "/deop guest2",
        &["error guest2 is not an operator of #k"],
    );
}

#[test]
fn server_operators_moderate_everywhere_disconnect_and_ban_from_the_server() {
    let (mut h, now) = harness();
    h.chat
        .set_operators(vec![Fingerprint::of_spki(b"root key")]);
    let root = ClientId(1);
    h.join_as(root, certificate("root", b"root key"));
    let (a, troll) = (h.join(2), ClientId(3));
    h.join_from(troll, from("198.51.100.7:4000"), None);
    // Nobody is sent away from the lobby, the room everyone comes back to.
    h.expect(
        root,
        "/ban guest2",
        &["error nobody can be banned in #lobby: server operators can /kill or /serverban"],
    );
    h.send(a, "/join #r");
    h.send(troll, "/join #r");
    h.send(root, "/join #r");
    // Not the room's operator, but the server's.
    h.send(root, "/mute guest3");
    // A room operator may not touch a server operator.
    h.expect(a, "/kick root", &["error root is a server operator"]);
    let seen = h.send(root, "/kill guest3 enough");
    assert_eq!(
        seen[&troll],
        ["error you were disconnected by root: enough"]
    );
    assert_eq!(
        seen[&a],
        ["notice guest3 quit: disconnected by root: enough"]
    );
    assert!(h.closed.contains(&troll));
    // Banned from the server by address: refused on connecting, told why
    // and for how long, and closed.
    h.send(root, "/serverban 198.51.100.7 2h trolling");
    let back = ClientId(4);
    let seen = h.join_from(back, from("198.51.100.7:5000"), None);
    assert_eq!(
        seen[&back],
        ["error you are banned from this server by root (2h left): trolling"]
    );
    assert!(h.closed.contains(&back));
    match h.saved.last() {
        Some(Save::ServerBans(Some(text))) => {
            assert_eq!(text, "ban 1800007200 root 198.51.100.7 trolling")
        }
        other => panic!("{other:?}"),
    }
    now.fetch_add(7200, Ordering::SeqCst);
    let again = ClientId(5);
    let seen = h.join_from(again, from("198.51.100.7:5000"), None);
    assert_eq!(seen[&again][0], format!("notice {}", protocol::WELCOME));
    assert_eq!(h.saved.last(), Some(&Save::ServerBans(None)));
    // Banning someone here disconnects them at once.
    let seen = h.send(root, "/serverban guest5");
    assert_eq!(
        seen[&again][0],
        "error you are banned from this server by root (until lifted)"
    );
    assert!(h.closed.contains(&again));
    h.send(root, "/serverunban guest5");
    assert!(h.chat.moderation.server_bans.is_empty());
    h.expect(
        a,
        "/serverban root",
        &["error only server operators may do that: \
        their keys are in the server's --operators file"],
    );
}

#[test]
fn the_rules_and_server_bans_come_back_from_their_text() {
    let (mut h, _) = harness();
    let alice = ClientId(1);
    h.join_as(alice, certificate("alice", b"alice key"));
    let bob = ClientId(2);
    h.join_as(bob, certificate("bob", b"bob key"));
    let guest = h.join(3);
    h.chat
        .set_operators(vec![Fingerprint::of_spki(b"alice key")]);
    h.send(alice, "/join #Keep");
    h.send(guest, "/join #Keep");
    h.send(alice, "/op bob");
    h.send(alice, "/mute guest3 10m too loud");
    h.send(alice, "/ban 203.0.113.9 7d");
    h.send(
        alice,
        "/ban sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    h.send(alice, "/invite bob");
    h.send(alice, "/mode +i");
    h.send(alice, "/mode +t");
    h.send(alice, "/serverban 2001:db8::7 1h no");
    let text = saved_rules(&h, "#keep").unwrap().unwrap();
    let bans = match h
        .saved
        .iter()
        .rev()
        .find(|s| matches!(s, Save::ServerBans(_)))
    {
        Some(Save::ServerBans(Some(text))) => text.clone(),
        other => panic!("{other:?}"),
    };
    // Into a chat that never saw them, by display name or key.
    let (mut fresh, _) = harness();
    fresh.chat.restore_rules("#Keep", &text).unwrap();
    fresh.chat.restore_server_bans(&bans).unwrap();
    let now = fresh.chat.now();
    let rules = &fresh.chat.moderation.rooms["#keep"];
    assert_eq!(rules.to_text(now, false).as_deref(), Some(text.as_str()));
    assert_eq!(
        rules,
        &h.chat.moderation.rooms["#keep"].clone().without_guests()
    );
    assert_eq!(
        fresh.chat.moderation.server_bans,
        h.chat.moderation.server_bans
    );
    // Restored, they hold: the room is invite-only, bob is an operator.
    let guest = fresh.join(4);
    let bob = ClientId(5);
    fresh.join_as(bob, certificate("bob", b"bob key"));
    assert!(fresh.ask(guest, "/join #keep")[0].starts_with("error #keep is invite-only"));
    assert!(fresh.ask(bob, "/join #keep")[0].starts_with("notice you are in #keep"));
    assert_eq!(
        fresh.ask(bob, "/mode -t"),
        ["notice bob unlocked the topic of #keep"]
    );
    // Nothing left: nothing kept, and `None` saved.
    fresh.chat.restore_rules("#keep", "").unwrap();
    assert!(!fresh.chat.moderation.rooms.contains_key("#keep"));
    let err = fresh
        .chat
        .restore_rules("#keep", "op sha256:x\n")
        .unwrap_err();
    assert!(err.starts_with("line 1: "), "{err}");
    let err = fresh
        .chat
        .restore_rules("#keep", "topic-lock\nfrob")
        .unwrap_err();
    assert_eq!(err, "line 2: unknown rule \"frob\"");
    assert!(fresh.chat.restore_rules("keep", "").is_err());
    assert!(fresh.chat.restore_server_bans("mute - a b").is_err());
}

impl RoomRules {
    /// The rules as saved: without operators by nick.
    fn without_guests(mut self) -> RoomRules {
        self.guest_ops.clear();
        self
    }
}

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

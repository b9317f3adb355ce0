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
pub(super) fn harness() -> (Harness, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(1_800_000_000));
    let mut h = Harness::new(SETTINGS);
    let read = Arc::clone(&now);
    h.chat.set_clock(Clock::new(move || {
        UNIX_EPOCH + Duration::from_secs(read.load(Ordering::SeqCst))
    }));
    (h, now)
}

pub(super) fn certificate(cn: &str, key: &[u8]) -> Option<PeerCertificate> {
    Some(PeerCertificate {
        subject: format!("CN={cn}"),
        common_name: Some(cn.to_string()),
        key: Some(Fingerprint::of_spki(key)),
    })
}

pub(super) fn from(address: &str) -> SocketAddr {
    address.parse().unwrap()
}

/// The last rules the chat asked to save for `room`.
pub(super) fn saved_rules(h: &Harness, room: &str) -> Option<Option<String>> {
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
    assert_eq!(h.closed.get(&troll), Some(&CloseReason::Killed));
    // Banned from the server by address: refused on connecting, told why
    // and for how long, and closed.
    h.send(root, "/serverban 198.51.100.7 2h trolling");
    let back = ClientId(4);
    let seen = h.join_from(back, from("198.51.100.7:5000"), None);
    assert_eq!(
        seen[&back],
        ["error you are banned from this server by root (2h left): trolling"]
    );
    assert_eq!(h.closed.get(&back), Some(&CloseReason::Refused));
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
    assert_eq!(h.closed.get(&again), Some(&CloseReason::Banned));
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

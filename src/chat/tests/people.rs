//! Names, certificates, sessions and reclaim secrets, on a server alone.

use super::*;
use crate::chat::commands::{hex, same_secret};
use crate::tls::Fingerprint;

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
    assert!(seen[&odd][0].starts_with(r#"error your certificate's common name ("not a nick")"#));
    assert_eq!(h.closed.get(&odd), Some(&CloseReason::Refused));
    let b = h.join(4);
    h.expect(
        b,
        "/whois ALICE",
        &["notice alice is in #lobby, certificate CN=alice"],
    );
}

/// A certificate for `cn`; the same name, the same certificate (its key
/// stands in as the fingerprint of the name's bytes).
fn cert(cn: &str) -> Option<PeerCertificate> {
    cert_with_key(cn, cn.as_bytes())
}

/// A certificate for `cn` whose key is `key`.
fn cert_with_key(cn: &str, key: &[u8]) -> Option<PeerCertificate> {
    Some(PeerCertificate {
        subject: format!("CN={cn}"),
        common_name: Some(cn.to_string()),
        key: Some(Fingerprint::of_spki(key)),
    })
}

/// The name is not the person: a certificate with another key, whatever
/// its name's case, is refused while the first holds the nick, and never
/// sees what is sent to it.
#[test]
fn another_key_with_the_same_name_is_someone_else() {
    let mut h = Harness::new(SETTINGS);
    let (alice, bob) = (ClientId(1), ClientId(2));
    h.join_as(alice, cert("alice"));
    h.join_as(bob, cert("bob"));
    for (n, impostor) in [
        (3, cert("Alice")),
        (4, cert_with_key("alice", b"another key")),
    ] {
        let id = ClientId(n);
        let seen = h.join_as(id, impostor);
        assert_eq!(
            seen[&id],
            [
                "error alice is connected with another certificate (another key); \
              a name is one person's at a time"
            ]
        );
        assert_eq!(h.closed.get(&id), Some(&CloseReason::Refused));
        let seen = h.send(bob, "/msg Alice psst");
        assert_eq!(seen[&alice], ["private bob alice psst"]);
        assert!(!seen.contains_key(&id), "{seen:?}");
    }
    // A name a control character was taken out of is not that name.
    let odd = ClientId(5);
    let seen = h.join_as(odd, cert("al\u{7}ice"));
    assert!(
        seen[&odd][0].starts_with(
            r#"error your certificate's common name ("al\u{7}ice") is not a valid nick"#
        ),
        "{seen:?}"
    );
}

#[test]
fn one_certificate_may_have_several_sessions_that_act_as_one_person() {
    let mut h = Harness::new(SETTINGS);
    let (laptop, phone, bob) = (ClientId(1), ClientId(2), ClientId(3));
    h.join_as(laptop, cert("alice"));
    h.join_as(bob, cert("bob"));
    let seen = h.join_as(phone, cert("alice"));
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
    assert_eq!(h.closed.get(&fourth), Some(&CloseReason::Refused));
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
    assert_eq!(
        h.closed.get(&old),
        Some(&CloseReason::Replaced),
        "the ghost is closed"
    );
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

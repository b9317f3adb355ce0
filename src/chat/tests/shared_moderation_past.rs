//! Moderation shared with other servers, for a room whose past (and
//! rules) come after people here entered it: what they said meanwhile is
//! checked against the rules when they come, by who said it.

use super::shared_moderation::{den, rules};
use super::*;
use crate::elsewhere::Waiting;

/// The others tell `room`'s past: not new, no topic, these `lines` and
/// `rules`, and the lines said here meanwhile (`waiting`). What each
/// client here was sent.
fn past_comes(
    h: &mut Harness,
    room: RoomId,
    lines: Vec<Arc<str>>,
    rules: Option<&str>,
    waiting: Vec<Waiting>,
) -> HashMap<ClientId, Vec<String>> {
    let told = Told::Recent {
        room,
        lines,
        topic: None,
        rules: Some(rules.map(str::to_owned)),
        fresh: false,
        waiting,
    };
    h.by_others(|chat, out| {
        chat.told(told, out);
    })
}

/// The room lines among `out`, as lines that wait for the others (shared,
/// a line waits for them: here, for the room's past).
fn waiting_lines(out: Vec<Output>) -> Vec<Waiting> {
    out.into_iter()
        .filter_map(|output| match output {
            Output::ToRoom(line) => Some(Waiting::Line(line)),
            _ => None,
        })
        .collect()
}

/// A shared chat where `guest7-1` and `guest7-2` entered `#den` before
/// its past (and rules) came, and said `waiting` meanwhile (by client
/// number, 1 or 2); then it comes, with `rules`, and what they said.
fn past_after_entry(
    rules: &str,
    waiting: &[(u64, &str)],
) -> (Harness, ClientId, ClientId, HashMap<ClientId, Vec<String>>) {
    let mut h = Harness::shared();
    let (a, b) = (h.join(1), h.join(2));
    h.send(a, "/join #den");
    h.send(b, "/join #den");
    let room = h.chat.room_named("#den").unwrap();
    let mut said = Vec::new();
    for &(id, text) in waiting {
        h.chat
            .line(ClientId(id), Frame::Line(text.to_owned()), &mut said);
    }
    let waiting = waiting_lines(said);
    let seen = past_comes(
        &mut h,
        room,
        vec![Arc::from("chat zed from before\n")],
        Some(rules),
        waiting,
    );
    (h, a, b, seen)
}

#[test]
fn a_ban_that_comes_with_the_past_holds_before_the_past_is_shown() {
    let (_, a, b, seen) = past_after_entry("ban - mallory guest7-2 spamming", &[]);
    assert!(
        !seen[&b].iter().any(|line| line.contains("from before")),
        "{seen:?}"
    );
    assert!(seen[&b].iter().any(|line| line
        == "notice guest7-2 was sent from #den to the lobby by mallory: banned: spamming"));
    assert!(
        seen[&a].iter().any(|line| line.contains("from before")),
        "{seen:?}"
    );
}

#[test]
fn a_line_said_before_the_rules_came_is_checked_against_its_speaker_renamed_since() {
    let mut h = Harness::shared();
    let (a, b) = (h.join(1), h.join(2));
    h.send(a, "/join #den");
    h.send(b, "/join #den");
    let room = h.chat.room_named("#den").unwrap();
    // Said as guest7-2, who takes another nick before the rules come.
    let mut out = Vec::new();
    h.chat.line(b, Frame::Line("sneaked".to_owned()), &mut out);
    let said: Vec<Waiting> = waiting_lines(out);
    assert_eq!(said.len(), 1, "{said:?}");
    h.send(b, "/nick sneaky");
    h.claimed("sneaky", Claim::Ours);
    let seen = past_comes(
        &mut h,
        room,
        Vec::new(),
        Some("mute - mallory guest7-2"),
        said,
    );
    assert!(
        !seen.values().flatten().any(|line| line.contains("sneaked")),
        "{seen:?}"
    );
}

#[test]
fn lines_said_before_the_rules_came_are_checked_against_them() {
    let (_, a, _, seen) =
        past_after_entry("mute - mallory guest7-2", &[(2, "sneaked"), (1, "fine")]);
    assert!(
        seen[&a].contains(&"chat guest7-1 fine".to_owned()),
        "{seen:?}"
    );
    assert!(
        !seen.values().flatten().any(|line| line.contains("sneaked")),
        "{seen:?}"
    );
}

#[test]
fn an_invite_only_room_sends_out_who_entered_before_its_rules_came() {
    let (mut h, a, b, seen) = past_after_entry("invite-only\ninvited guest7-2", &[]);
    let refused = "error #den is invite-only: an operator of it must /invite you";
    assert_eq!(seen[&a][0], refused, "{seen:?}");
    assert!(seen[&a]
        .last()
        .unwrap()
        .starts_with("notice you are in #lobby ("));
    // Invited: let in, the invitation used up.
    assert!(!seen[&b].contains(&refused.to_owned()), "{seen:?}");
    assert_eq!(
        h.saved.last(),
        Some(&Save::Rules {
            room: "#den".into(),
            rules: Some("invite-only".into()),
        })
    );
    h.expect(
        b,
        "/bans",
        &[
            "notice operators of #den: none",
            "notice bans in #den: none",
            "notice mutes in #den: none",
            "notice invited to #den: none",
            "notice modes of #den: invite-only (+i)",
        ],
    );
}

#[test]
fn rules_are_held_only_for_rooms_someone_here_is_in() {
    let (mut h, a, b, _) = den(true);
    // Rooms nobody here is in: the others keep their rules.
    for n in 0..50 {
        h.by_others(|chat, out| {
            let told = Told::Rules {
                room: format!("#far{n}"),
                rules: Some("ban - mallory zed".to_owned()),
            };
            chat.told(told, out);
        });
    }
    assert_eq!(h.chat.moderation.rooms.len(), 1);
    // A room left by everyone here: only its operators by nick stay.
    rules(&mut h, Some("ban - mallory zed\nguests-only"));
    h.send(a, "/join #lobby");
    h.send(b, "/join #lobby");
    let left = &h.chat.moderation.rooms["#den"];
    assert_eq!(left.guest_ops, vec!["guest7-1".to_owned()]);
    assert!(left.bans.is_empty(), "{left:?}");
    h.saved.clear();
    h.left(a, None);
    assert!(h.chat.moderation.rooms.is_empty());
    // They were the guests' alone: taken back.
    assert_eq!(
        h.saved,
        vec![Save::Rules {
            room: "#den".into(),
            rules: None,
        }]
    );

    // Rules someone with a certificate stands behind stay with the
    // others when the guest operator goes.
    let (mut h, a, b, _) = den(true);
    rules(&mut h, Some("ban - mallory zed"));
    h.send(a, "/join #lobby");
    h.send(b, "/join #lobby");
    h.saved.clear();
    h.left(a, None);
    assert!(h.chat.moderation.rooms.is_empty());
    assert!(h.saved.is_empty(), "{:?}", h.saved);
}

#[test]
fn what_ends_by_itself_is_not_sent_to_the_others() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, UNIX_EPOCH};
    let (mut h, a, b, _) = den(true);
    let now = Arc::new(AtomicU64::new(1_800_000_000));
    let read = Arc::clone(&now);
    h.chat.set_clock(crate::chat::Clock::new(move || {
        UNIX_EPOCH + Duration::from_secs(read.load(Ordering::SeqCst))
    }));
    rules(
        &mut h,
        Some("mute 1800000060 mallory guest7-2\nban 1800000060 mallory zed"),
    );
    h.by_others(|chat, out| {
        chat.told(
            Told::ServerBans(Some("ban 1800000060 root carol".into())),
            out,
        );
    });
    now.store(1_800_000_100, Ordering::SeqCst);
    h.saved.clear();
    let seen = h.send(b, "free");
    assert_eq!(seen[&b], vec!["chat guest7-2 free"]);
    h.send(a, "/join #lobby");
    h.send(a, "/join #den");
    h.join(3);
    assert!(h.saved.is_empty(), "{:?}", h.saved);
}

#[test]
fn a_line_said_as_the_link_comes_back_is_checked_against_the_rules_that_come() {
    let mut h = Harness::shared();
    let (a, b) = (h.join(1), h.join(2));
    h.by_others(|chat, out| {
        let told = Told::Unreachable {
            notice: "down",
            lines: Vec::new(),
        };
        chat.told(told, out);
    });
    h.send(a, "/join #den");
    h.send(b, "/join #den");
    let room = h.chat.room_named("#den").unwrap();
    // The link is up, and has queued the line for the room's past, but
    // the chat has not been told yet.
    let mut out = Vec::new();
    h.chat.line(b, Frame::Line("sneaked".to_owned()), &mut out);
    let mut said: Vec<Waiting> = waiting_lines(out);
    assert_eq!(said.len(), 1, "{said:?}");
    // And a line no speaker was noted for (past the notes' bound): its
    // speaker is read from it.
    said.push(Waiting::Line(RoomLine {
        room,
        line: Arc::from("chat guest7-2 unnoted\n"),
        except: None,
        keep: Keep::History,
    }));
    h.by_others(|chat, out| {
        let told = Told::Reachable {
            notice: "up",
            guest_prefix: None,
        };
        chat.told(told, out);
    });
    let seen = past_comes(
        &mut h,
        room,
        Vec::new(),
        Some("mute - mallory guest7-2"),
        said,
    );
    assert!(
        !seen
            .values()
            .flatten()
            .any(|line| line.contains("sneaked") || line.contains("unnoted")),
        "{seen:?}"
    );
}

#[test]
fn who_spoke_before_the_past_came_is_forgotten_with_the_room() {
    let mut h = Harness::shared();
    let (a, b) = (h.join(1), h.join(2));
    h.send(a, "/join #den");
    h.send(b, "/join #attic");
    let den = h.chat.room_named("#den").unwrap();
    let mut out = Vec::new();
    h.chat.line(a, Frame::Line("hello".to_owned()), &mut out);
    h.chat.line(b, Frame::Line("hi".to_owned()), &mut out);
    assert_eq!(h.chat.speakers_noted(), 2);
    // #den empties before its past comes: its note goes.
    h.send(a, "/join #attic");
    assert_eq!(h.chat.speakers_noted(), 1);
    // #attic's past comes, with nothing waiting: its note goes too.
    let attic = h.chat.room_named("#attic").unwrap();
    assert_ne!(attic, den);
    past_comes(&mut h, attic, Vec::new(), None, Vec::new());
    assert_eq!(h.chat.speakers_noted(), 0);
}

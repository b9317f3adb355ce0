//! The text Redis carries for a room line ([`encode`], [`decode`]), and the
//! checks that what comes back from Redis is what a server would have
//! sent: one clean line of a kind that belongs there. Not the link's own
//! framing (`redis_link`), nor what the hub does with a line.

use crate::chat::{ClientId, Keep, RoomId};
use crate::elsewhere::{Act, Deed, Query, RoomLine, WhoPart};
use crate::line::is_forbidden;
use crate::protocol::{Nick, Room, ServerLine};

/// The text Redis carries for a room line:
///
/// ```text
/// KIND EXCEPT LINE            KIND: h (history) or n (notice)
/// t EXCEPT TOPIC\nLINE        a topic change
/// ```
///
/// (The room's order also holds `v VERSION`, a change of its rules: the
/// link reads those, and the chat never sees them.)
///
/// EXCEPT is `-`, or `RUN.ID`: client ID of the run RUN
/// ([`RedisLink::run`](super::redis_link::RedisLink::run)). LINE is the
/// line as clients get it, `\n` included; a topic has no line end in it
/// (clients cannot send one), so the first `\n` ends it.
pub fn encode(token: &str, line: &RoomLine) -> String {
    let except = match line.except {
        Some(id) => format!("{token}.{}", id.0),
        None => "-".to_owned(),
    };
    match &line.keep {
        Keep::Nothing => format!("n {except} {}", line.line),
        Keep::History => format!("h {except} {}", line.line),
        Keep::Topic(topic) => format!("t {except} {topic}\n{}", line.line),
    }
}

/// Reads back what [`encode`] wrote, for room `room` of this run `token`;
/// `None` if it is not that.
pub fn decode(token: &str, room: RoomId, text: &str) -> Option<RoomLine> {
    let (kind, rest) = text.split_once(' ')?;
    let (except, rest) = rest.split_once(' ')?;
    let except = match except {
        "-" => None,
        other => {
            // A node's name may hold dots; the ID never does.
            let (run, id) = other.rsplit_once('.')?;
            let id: u64 = id.parse().ok()?;
            (run == token).then_some(ClientId(id))
        }
    };
    let (keep, line) = match kind {
        "n" => (Keep::Nothing, rest),
        "h" => (Keep::History, rest),
        "t" => {
            let (topic, line) = rest.split_once('\n')?;
            (Keep::Topic(topic.into()), line)
        }
        _ => return None,
    };
    let kinds: &[&str] = match keep {
        Keep::History => &["chat", "action"],
        Keep::Nothing | Keep::Topic(_) => &["chat", "action", "notice"],
    };
    if !is_server_line(line, kinds) {
        return None;
    }
    if let Keep::Topic(topic) = &keep {
        if !is_clean(topic) {
            return None;
        }
    }
    Some(RoomLine {
        room,
        line: line.into(),
        except,
        keep,
    })
}

/// The text a moderator's act travels as: `kick BY OP KEY ROOM [REASON]`
/// or `kill BY OP KEY [REASON]`, OP `1` if BY is a server operator, else
/// `0`, KEY their certificate's key (`sha256:...`), or `-` for none.
pub(super) fn encode_act(act: &Act) -> String {
    let op = if act.server_op { "1" } else { "0" };
    let key = act.key.map_or("-".to_owned(), |key| key.to_string());
    let mut text = match &act.deed {
        Deed::Kick(room) => format!("kick {} {op} {key} {room}", act.by),
        Deed::Kill => format!("kill {} {op} {key}", act.by),
    };
    if let Some(reason) = &act.reason {
        text.push(' ');
        text.push_str(reason);
    }
    text
}

/// Reads back what [`encode_act`] wrote; `None` for anything else: a
/// moderator who is not a nick, a room that is not one, a reason that is
/// not one clean line.
pub(super) fn decode_act(text: &str) -> Option<Act> {
    let (deed, rest) = text.split_once(' ')?;
    let (by, rest) = rest.split_once(' ')?;
    let (op, rest) = rest.split_once(' ')?;
    let server_op = match op {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    let (key, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let key = match key {
        "-" => None,
        key => Some(key.parse().ok()?),
    };
    let (deed, reason) = match deed {
        "kick" => {
            let (room, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            Room::parse(room).ok()?;
            (Deed::Kick(room.to_owned()), reason)
        }
        "kill" => (Deed::Kill, rest),
        _ => return None,
    };
    Nick::parse(by).ok()?;
    if !is_clean(reason) {
        return None;
    }
    Some(Act {
        by: by.to_owned(),
        server_op,
        key,
        deed,
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
    })
}

/// Whether `text` holds nothing the crate keeps off a screen
/// ([`is_forbidden`]): no line end, nothing a terminal would take as a
/// command, no writing-direction override. The one rule a client's line
/// meets too, so Redis cannot pass what a client may not.
pub(super) fn is_clean(text: &str) -> bool {
    !text.chars().any(is_forbidden)
}

/// Whether `line` is exactly one line a server sends a client, of one of
/// `kinds`, `\n` at its end and nowhere else. What comes from Redis is
/// checked as a client's line is: a Redis an attacker controls, or anyone
/// on the path of plain `redis://`, must not make one line into two, put
/// a terminal's commands on someone's screen, or make a line of a kind
/// the chat never shows there (an `error`, a `token`).
pub(super) fn is_server_line(line: &str, kinds: &[&str]) -> bool {
    let Some(body) = line.strip_suffix('\n') else {
        return false;
    };
    let kind = body.split(' ').next().unwrap_or_default();
    is_clean(body) && kinds.contains(&kind) && ServerLine::parse(body).is_some()
}

/// Whether `name` is a nick's lower-case form, as the chat keys people.
pub(super) fn is_nick_key(name: &str) -> bool {
    Nick::parse(name).is_ok_and(|nick| nick.key() == name)
}

/// Whether a question from another server asks about a room or nick the
/// chat could have: anything else is not answered. (How many names a
/// `/who` may ask for, [`Query::decode`] checks.)
pub(super) fn is_sound(query: &Query) -> bool {
    match query {
        Query::Who { room, .. } => Room::parse(room).is_ok(),
        Query::Whois(name) => Nick::parse(name).is_ok(),
        Query::Rooms => true,
    }
}

/// Whether `answer`, one server's part of the answer to `query`, could
/// be a server's: one clean line; for `/who`, a count no server could
/// exceed, and no more names than it or than were asked for, each a nick,
/// in the room's order, none twice.
pub(super) fn is_sound_answer(query: &Query, answer: &str) -> bool {
    if !is_clean(answer) {
        return false;
    }
    let Query::Who { names: asked, .. } = query else {
        return true;
    };
    let Some(part) = WhoPart::decode(answer, *asked) else {
        return false;
    };
    part.names.iter().all(|name| Nick::parse(name).is_ok())
        && part
            .names
            .windows(2)
            .all(|pair| WhoPart::order(pair[0], pair[1]).is_lt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(except: Option<ClientId>, keep: Keep) -> RoomLine {
        let line = match keep {
            Keep::History => "chat alice green tea?\n",
            _ => "notice alice set the topic of #tea: green\n",
        };
        RoomLine {
            room: RoomId(7),
            line: line.into(),
            except,
            keep,
        }
    }

    #[test]
    fn lines_round_trip_through_their_text() {
        for keep in [
            Keep::Nothing,
            Keep::History,
            Keep::Topic("green tea".into()),
        ] {
            let line = local(Some(ClientId(12)), keep);
            let text = encode("eu.1/run1", &line);
            assert_eq!(decode("eu.1/run1", RoomId(7), &text), Some(line.clone()));
            // Another run's client ID means nothing here.
            let theirs = decode("eu.1/run2", RoomId(7), &text).expect("decodes");
            assert_eq!(theirs.except, None);
            assert_eq!(theirs.line, line.line);
        }
    }

    #[test]
    fn a_marker_of_rules_is_no_line() {
        // What the rules' script puts in a room's order (`redis_link`).
        assert_eq!(decode("run", RoomId(1), "v 3"), None);
    }

    #[test]
    fn acts_round_trip_and_nonsense_is_refused() {
        let kick = Act {
            by: "op".into(),
            server_op: false,
            key: Some(crate::tls::Fingerprint::of_spki(b"op's key")),
            deed: Deed::Kick("#den".into()),
            reason: Some("too loud, sorry".into()),
        };
        let kill = Act {
            by: "root".into(),
            server_op: true,
            key: None,
            deed: Deed::Kill,
            reason: None,
        };
        for act in [kick, kill] {
            assert_eq!(decode_act(&encode_act(&act)), Some(act.clone()));
        }
        assert_eq!(
            encode_act(&Act {
                reason: None,
                ..decode_act("kill a 0 -").unwrap()
            }),
            "kill a 0 -"
        );
        for text in [
            "",
            "kick op 0 -",
            "kick op 2 - #den",
            "kick 9op 0 - #den",
            "kick op 0 - den",
            "kick op 0 #den",
            "kick op 0 sha256:zz #den",
            "ban op 0 - #den",
            "kill op 0",
            "kill op 0 - \u{1b}[2J",
            "kill op 0 - one\ntwo",
        ] {
            assert_eq!(decode_act(text), None, "{text:?}");
        }
    }

    #[test]
    fn nonsense_is_refused() {
        for text in [
            "",
            "h",
            "h -",
            "x - chat a b\n",
            "h run.x chat a b\n",
            "h - chat a b",
            "t - topic without a line",
            // One line made two, a terminal's command, kinds the chat
            // never shows in a room (or keeps as its history).
            "h - chat mallory hi\nnotice forged\n",
            "n - notice a\rnotice b\n",
            "h - chat mallory \u{1b}]0;title\u{7}\n",
            "n - error forged\n",
            "n - token alice secret\n",
            "h - notice kept as history\n",
            "t - top\u{1b}[2Jic\nnotice x set the topic\n",
            "t - topic\nnotice one\nnotice two\n",
            // A writing-direction override: a line made to look like
            // someone else's, as a client may not send one either.
            "h - chat mallory \u{202E}olleh\n",
            "t - to\u{202E}pic\nnotice x set the topic of #tea: to\u{202E}pic\n",
        ] {
            assert_eq!(decode("run", RoomId(1), text), None, "{text:?}");
        }
    }

    #[test]
    fn a_who_question_and_its_parts_are_checked() {
        let who = |names| Query::Who {
            room: "#tea".into(),
            names,
        };
        assert_eq!(Query::decode("who 200 #tea"), Some(who(200)));
        assert_eq!(Query::decode("who 0 #tea"), Some(who(0)));
        for text in [
            // The form of earlier versions, which asked for every name.
            "who #tea",
            "who  #tea",
            "who x #tea",
            "who -1 #tea",
            "who +5 #tea",
            "who 05 #tea",
            "who 10001 #tea",
            "who 99999999999999999999999 #tea",
        ] {
            assert_eq!(Query::decode(text), None, "{text:?}");
        }
        assert!(!is_sound(&Query::decode("who 100 tea").expect("decodes")));
        let asked = who(3);
        for part in ["0", "2 amy Bob", "9 amy Bob zed"] {
            assert!(is_sound_answer(&asked, part), "{part:?}");
        }
        for part in [
            "",
            "amy bob",
            "x amy",
            "+2 amy Bob",
            "02 amy Bob",
            "-1",
            "16777217 amy",
            "99999999999999999999999 amy",
            // More names than counted, or than asked for.
            "1 amy Bob",
            "9 amy Bob zed zoe",
            // Not nicks, not in order, twice, not one clean line.
            "2 amy 9bob",
            "2 amy ",
            "2 amy  Bob",
            "2 Bob amy",
            "2 amy AMY",
            "2 amy Bob\nnotice forged",
            "2 amy \u{1b}[2J",
            "2 amy \u{202E}boB",
        ] {
            assert!(!is_sound_answer(&asked, part), "{part:?}");
        }
        // Other answers are one clean line, as before.
        assert!(is_sound_answer(&Query::Rooms, "#tea 2 #rust 1"));
        assert!(!is_sound_answer(&Query::Rooms, "#tea 2\nnotice forged"));
        assert!(!is_sound_answer(&Query::Rooms, "#tea 2 #\u{202E}rust 1"));
    }
}

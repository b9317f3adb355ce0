//! Moderation through the link: a room's rules go to Redis in the room's
//! own order, as an entry among its lines, and come back to every server
//! in it ([`Told::Rules`]), mute before the next line; the server bans go
//! to every server; a kick or kill of someone on another server goes to
//! that server, as a private line does. What the chat does with them is
//! the chat's (`chat::moderation`); how they are written, `wire`.

use log::warn;

use super::redis_link::Refused;
use super::wire::{decode_act, encode_act, encode_rules, is_clean, is_nick_key};
use super::{weight, Linked, LINE_OVERHEAD};
use crate::chat::{ClientId, Save};
use crate::elsewhere::{Act, RoomLine, Sent, Told};

/// What waits here for room in the link's outbox, in its room's order.
#[derive(Debug)]
pub(super) enum Publication {
    /// A room line.
    Line(RoomLine),
    /// The room's rules, whole (empty: it has none).
    Rules(String),
}

impl Publication {
    /// What it counts against [`HELD_BACK_BYTES`](super::HELD_BACK_BYTES).
    pub(super) fn weight(&self) -> usize {
        match self {
            Publication::Line(line) => weight(line),
            Publication::Rules(rules) => rules.len() + LINE_OVERHEAD,
        }
    }
}

impl Linked {
    /// Hands Redis a room's rules, whole, as an entry in the room's order.
    pub(super) fn publish_rules(&self, key: &str, rules: &str) -> Result<(), Refused> {
        self.link.publish_rules(key, &encode_rules(rules), rules)
    }

    /// Gives the other servers what moderation changed here. While the
    /// link is down it stays on this server (which has it already); the
    /// next change of the same rules shares them whole.
    pub(super) fn share(&mut self, save: Save) {
        match save {
            Save::Rules { room, rules } => {
                let rules = rules.unwrap_or_default();
                // Behind the lines that wait already: one order per room.
                if !self.overflow.is_empty() && self.link.is_up() {
                    return self.hold_rules(room, rules);
                }
                match self.publish_rules(&room, &rules) {
                    Ok(()) => {}
                    Err(Refused::Full) => self.hold_rules(room, rules),
                    Err(Refused::Down) => {
                        warn!("the rules of {room} stay on this server: the link is down");
                    }
                }
            }
            Save::ServerBans(bans) => {
                if let Err(refused) = self.link.share_server_bans(bans.as_deref()) {
                    warn!("the server bans stay on this server: {refused}");
                }
            }
        }
    }

    fn hold_rules(&mut self, room: String, rules: String) {
        let waiting = Publication::Rules(rules);
        if self.room_for(waiting.weight()) {
            self.overflow.push_back((room, waiting));
        } else {
            warn!("the rules of {room} stay on this server: Redis is far behind");
        }
    }

    /// A room's rules, told to every server: one with members in the
    /// room has them in the room's order instead (or, still waiting for
    /// its past, with it), so only the others take this copy.
    pub(super) fn room_rules(&self, room: String, rules: Option<String>) -> Told {
        if self.by_key.contains_key(&room) {
            return Told::Nothing;
        }
        rules_told(room, rules)
    }
}

/// A room's rules from Redis, for the chat, if they are clean text.
pub(super) fn rules_told(room: String, rules: Option<String>) -> Told {
    match rules {
        Some(rules) if !is_clean_rules(&room, &rules) => Told::Nothing,
        rules => Told::Rules { room, rules },
    }
}

/// The server bans from Redis, for the chat, if they are clean text.
pub(super) fn server_bans_told(bans: Option<String>) -> Told {
    match bans {
        Some(bans) if !bans.lines().all(is_clean) => {
            warn!("the server bans from Redis make no sense; ignored");
            Told::Nothing
        }
        bans => Told::ServerBans(bans),
    }
}

/// Whether a room's rules from Redis are lines the chat could have
/// written: nothing a terminal would obey is shown by `/bans`. (The chat
/// reads them, and refuses what is not rules.)
pub(super) fn is_clean_rules(room: &str, rules: &str) -> bool {
    let clean = rules.lines().all(is_clean);
    if !clean {
        warn!("the rules of {room} from Redis make no sense; ignored");
    }
    clean
}

impl Linked {
    /// Sends a moderator's act to whichever server has `to` (in lower
    /// case); the answer comes as [`Told::ActSent`]. `Err` if it cannot
    /// go now.
    pub(super) fn act(&mut self, from: ClientId, to: String, act: Act) -> Result<(), Refused> {
        let ticket = self.ticket();
        self.link.send_act(ticket, &to, &encode_act(&act))?;
        self.acts.insert(ticket, (from, to, act));
        Ok(())
    }

    /// What became of the act sent with `ticket`, if one was.
    pub(super) fn act_sent(&mut self, ticket: u64, sent: Sent) -> Told {
        match self.acts.remove(&ticket) {
            Some((from, to, act)) => Told::ActSent {
                from,
                to,
                act,
                sent,
            },
            None => Told::Nothing,
        }
    }
}

/// A moderator's act from Redis for `to`, here, if it is what a server
/// sends.
pub(super) fn act_told(to: String, act: &str) -> Told {
    match decode_act(act) {
        Some(act) if is_nick_key(&to) => Told::ActIn(to, act),
        _ => {
            warn!("a moderator's act from Redis makes no sense; dropped");
            Told::Nothing
        }
    }
}

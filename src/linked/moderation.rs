//! Moderation through the link: a change of a room's rules goes to Redis
//! on the version of the copy this server had (`redis_link` makes it again
//! on what Redis has, if that moved), in the room's order; every server
//! in the room reads the rules there, mute before the next line
//! ([`Told::Rules`]). A change made while the link is down waits, and is
//! made again on what Redis has once it is back. The server bans go to
//! every server; a kick or kill of someone on another server goes to that
//! server, as a private line does. What the chat does with them is the
//! chat's (`chat::moderation`); how they are written, `wire`.

use log::warn;

use super::redis_link::{merge, Refused, RulesCopy};
use super::wire::{decode_act, encode_act, is_clean, is_nick_key};
use super::{Linked, LINE_OVERHEAD};
use crate::chat::{ClientId, Save};
use crate::elsewhere::{Act, Sent, Told, Waiting};

/// What waits here for room in the link's outbox, in its room's order.
#[derive(Debug)]
pub(super) enum Publication {
    /// A room line.
    Line(crate::elsewhere::RoomLine),
    /// A change of the room's rules: the whole new text, made on `base`.
    Rules {
        base: RulesCopy,
        rules: Option<String>,
    },
}

impl Publication {
    /// What it counts against [`HELD_BACK_BYTES`](super::HELD_BACK_BYTES).
    pub(super) fn weight(&self) -> usize {
        match self {
            Publication::Line(line) => super::weight(line),
            Publication::Rules { base, rules } => change_weight(base, rules),
        }
    }
}

/// What a change of rules made on `base` counts against
/// [`HELD_BACK_BYTES`](super::HELD_BACK_BYTES) while it waits for the
/// outbox: it holds both texts.
fn change_weight(base: &RulesCopy, rules: &Option<String>) -> usize {
    rules_weight(&base.rules) + rules_weight(rules)
}

/// What rules that wait here count against
/// [`HELD_BACK_BYTES`](super::HELD_BACK_BYTES).
fn rules_weight(rules: &Option<String>) -> usize {
    rules.as_ref().map_or(0, String::len) + LINE_OVERHEAD
}

/// What something that waits for its room's past counts against
/// [`HELD_BACK_BYTES`](super::HELD_BACK_BYTES).
pub(super) fn waiting_weight(waiting: &Waiting) -> usize {
    match waiting {
        Waiting::Line(line) => super::weight(line),
        Waiting::Rules { rules, .. } => rules_weight(rules),
    }
}

/// The most rooms whose changes of rules wait here for Redis at once: a
/// change per room, each at most the shared rules' bound (16 KiB).
pub(super) const MOST_UNSENT: usize = 1024;

/// A change of a room's rules that could not go while the link was down
/// or Redis far behind:
/// made on `base`, it goes once the link is back.
#[derive(Debug)]
pub(super) struct Unsent {
    pub(super) base: RulesCopy,
    pub(super) rules: Option<String>,
}

impl Linked {
    /// Hands Redis a change of a room's rules, made on `base`.
    pub(super) fn write_rules(
        &self,
        key: &str,
        base: &RulesCopy,
        rules: Option<&str>,
    ) -> Result<(), Refused> {
        self.link.write_rules(key, base, rules)
    }

    /// Gives the other servers what moderation changed here.
    pub(super) fn share(&mut self, save: Save) {
        match save {
            Save::Rules { room, rules } => {
                // The room's past (and so its rules) is still to come: the
                // change waits with the lines said before it, in its place.
                let awaited = self.by_key.get(&room).copied().filter(|id| {
                    let joined = self.rooms.get(id);
                    joined.is_some_and(|joined| joined.waiting.is_some())
                });
                if let Some(id) = awaited.filter(|_| self.link.is_up()) {
                    if !self.may_hold_back(rules_weight(&rules)) {
                        // Redis is far behind: the change waits apart,
                        // made on no known rules (it only adds), until the
                        // outbox drains or the link is back.
                        return self.keep_unsent(room, RulesCopy::default(), rules);
                    }
                    let joined = self.rooms.get_mut(&id);
                    if let Some(waiting) = joined.and_then(|joined| joined.waiting.as_mut()) {
                        waiting.push(Waiting::Rules { room, rules });
                    }
                    return;
                }
                let base = self.copies.get(&room).cloned().unwrap_or_default();
                self.change_rules(room, base, rules);
            }
            Save::ServerBans(bans) => {
                if let Err(refused) = self.link.share_server_bans(bans.as_deref()) {
                    warn!("the server bans stay on this server: {refused}");
                }
            }
        }
    }

    /// Sends a change of `room`'s rules, made on `base`: now, or behind
    /// what waits for the outbox, or, with the link down, once it is back.
    pub(super) fn change_rules(&mut self, room: String, base: RulesCopy, rules: Option<String>) {
        // Behind the lines that wait already: one order per room.
        if !self.overflow.is_empty() && self.link.is_up() {
            return self.hold_rules(room, base, rules);
        }
        match self.write_rules(&room, &base, rules.as_deref()) {
            Ok(()) => {}
            Err(Refused::Full) => self.hold_rules(room, base, rules),
            Err(Refused::Down) => self.keep_unsent(room, base, rules),
        }
    }

    /// Puts a change of `room`'s rules behind what waits for the outbox;
    /// if too much waits already, it waits apart for the outbox to drain.
    fn hold_rules(&mut self, room: String, base: RulesCopy, rules: Option<String>) {
        if self.may_hold_back(change_weight(&base, &rules)) {
            let change = Publication::Rules { base, rules };
            self.overflow.push_back((room, change));
        } else {
            self.keep_unsent(room, base, rules);
        }
    }

    /// Keeps a change of `room`'s rules for when the link is back, or the
    /// outbox drains: made on the earliest copy of the changes that wait,
    /// the latest text. One per room, at most [`MOST_UNSENT`] rooms.
    pub(super) fn keep_unsent(&mut self, room: String, base: RulesCopy, rules: Option<String>) {
        if let Some(unsent) = self.unsent.get_mut(&room) {
            unsent.rules = rules;
            return;
        }
        if self.unsent.len() >= MOST_UNSENT {
            warn!("a change of the rules of {room} stays on this server: too many wait already");
            return;
        }
        log::debug!("a change of the rules of {room} waits for Redis");
        self.unsent.insert(room, Unsent { base, rules });
    }

    /// The link is back, or the outbox drained: the changes that waited go,
    /// each made again on what Redis has if that moved (those the outbox
    /// still has no room for wait again).
    pub(super) fn send_unsent(&mut self) {
        let unsent: Vec<(String, Unsent)> = self.unsent.drain().collect();
        for (room, Unsent { base, rules }) in unsent {
            self.change_rules(room, base, rules);
        }
    }

    /// A room's rules as Redis has them (for a room this server is in, at
    /// their place in its order; for another, as they change): the copy
    /// changes here are made on. A change that waits for the link to be
    /// back is made again on them, here too, so that it holds meanwhile.
    pub(super) fn room_rules(&mut self, room: String, copy: RulesCopy) -> Told {
        if self.by_key.contains_key(&room) {
            self.copies.insert(room.clone(), copy.clone());
        }
        let rules = self.with_unsent(&room, copy);
        rules_told(room, rules)
    }

    /// `room`'s rules as Redis has them (`copy`), with the change that
    /// waits here for it made again on them, if one does.
    pub(super) fn with_unsent(&mut self, room: &str, copy: RulesCopy) -> Option<String> {
        match self.unsent.get_mut(room) {
            Some(unsent) => {
                let merged = merge(
                    unsent.base.rules.as_deref(),
                    unsent.rules.as_deref(),
                    copy.rules.as_deref(),
                );
                unsent.base = copy;
                unsent.rules.clone_from(&merged);
                merged
            }
            None => copy.rules,
        }
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

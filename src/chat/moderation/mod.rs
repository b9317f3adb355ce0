//! Moderation on this server: who is an operator (of the server, by key;
//! of a room, by key or while connected), and the checks the rest of the
//! chat asks on connecting, entering a room and speaking. The state's
//! values and text are in `rules`, what each command does in `commands`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::{to, Chat, ClientId, Output, Person, RoomId};
use crate::protocol::{self, Nick, Room, ServerLine};
use crate::seats::Block;
use crate::tls::Fingerprint;

mod commands;
mod rules;
mod shared;

#[cfg(feature = "redis")]
pub(crate) use rules::check_shared_rules;
pub use rules::Clock;
pub(crate) use rules::{Identifiers, RoomRules, Sanction, Target};

use rules::{sanction_lines, server_bans_from_text};
use shared::Speaker;

/// The most rooms a guest is an operator of at once. A room's rules are
/// bounded ([`rules::MAX_PER_ROOM`]), and a guest's go with them, but
/// while connected a guest could make a room a few times a minute and
/// fill each: this bounds what one guest can make the server hold.
pub(crate) const GUEST_OP_ROOMS: usize = 10;

/// What the chat asks to be kept across a restart, whenever it changes:
/// the store takes it (a server alone with a data directory; otherwise
/// the hub lets it go).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Save {
    /// A room's operators by key, bans, mutes, invitations and modes, as
    /// [`Chat::restore_rules`] reads them; `None` when it has none left.
    Rules {
        /// The room's key ([`Room::key`]).
        room: String,
        /// The rules as text.
        rules: Option<String>,
    },
    /// The server's bans, as [`Chat::restore_server_bans`] reads them;
    /// `None` when there are none.
    ServerBans(Option<String>),
}

/// Everything moderation keeps, beside the people and rooms.
#[derive(Debug, Default)]
pub(super) struct ModerationState {
    /// Server operators, by key (`--operators`).
    pub(super) operators: HashSet<Fingerprint>,
    /// Rules by room key, apart from the rooms themselves: a room that
    /// empties is forgotten, its rules are not (its operators by key, its
    /// bans), and rules are restored whether or not anyone is in it.
    pub(super) rooms: HashMap<String, RoomRules>,
    pub(super) server_bans: Vec<Sanction>,
    clock: Clock,
    /// Shared: rooms entered here while nobody here was in them, and who
    /// entered, until the others tell whether the room is new everywhere
    /// (see `shared`).
    makers: HashMap<RoomId, String>,
    /// Shared: who entered a room here (by room key) while this server
    /// knew no rules for it, until its past brings them (see `shared`).
    unchecked: HashMap<String, Vec<String>>,
    /// Shared: who said each line said here in a room whose past is
    /// awaited, until it comes (see `shared`).
    speakers: HashMap<RoomId, Vec<Speaker>>,
}

/// Who is acting, where, and with which rights.
pub(super) struct Actor {
    id: ClientId,
    key: String,
    nick: String,
    room: RoomId,
    room_name: String,
    room_key: String,
    server_op: bool,
}

impl Chat {
    /// Where the chat reads the time for the expiries of bans and mutes
    /// (the system's wall clock unless this is called).
    pub fn set_clock(&mut self, clock: Clock) {
        self.moderation.clock = clock;
    }

    /// The server operators from now on, by their certificates' keys.
    pub fn set_operators(&mut self, keys: Vec<Fingerprint>) {
        log::info!("{} server operators", keys.len());
        self.moderation.operators = keys.into_iter().collect();
    }

    /// Restores a room's rules from the text a [`Save::Rules`] held.
    /// `room` is its name or key; its rules are replaced (operators
    /// without a certificate, who are never saved, stay). The room
    /// need not have anyone in it.
    pub fn restore_rules(&mut self, room: &str, text: &str) -> Result<(), String> {
        let name = Room::parse(room).map_err(|why| format!("{room:?} is not a room ({why})"))?;
        let mut rules = RoomRules::from_text(text)?;
        let key = name.key();
        if let Some(old) = self.moderation.rooms.remove(&key) {
            rules.guest_ops = old.guest_ops;
        }
        // Only guests' (`guests-only`, shared): held while the others
        // hold them, unless a guest operator of them is here, with whom
        // they go.
        rules.held_elsewhere = !rules.kept && rules.guest_ops.is_empty();
        if !rules.is_empty() {
            self.moderation.rooms.insert(key.clone(), rules);
        }
        self.refresh_room_mutes(&key);
        Ok(())
    }

    /// Restores the server's bans from the text a [`Save::ServerBans`]
    /// held, replacing them.
    pub fn restore_server_bans(&mut self, text: &str) -> Result<(), String> {
        self.moderation.server_bans = server_bans_from_text(text)?;
        Ok(())
    }

    pub(super) fn now(&self) -> u64 {
        self.moderation.clock.unix_now()
    }

    /// The identifiers of someone here, for matching bans, mutes and
    /// invitations.
    fn identifiers(&self, key: &str) -> Option<Identifiers> {
        let person = self.people.get(key)?;
        let mut blocks: Vec<Block> = Vec::with_capacity(person.sessions.len());
        for session in person
            .sessions
            .iter()
            .filter_map(|id| self.sessions.get(id))
        {
            let block = Block::of(session.peer.ip());
            if !blocks.contains(&block) {
                blocks.push(block);
            }
        }
        Some(Identifiers {
            nick: key.to_owned(),
            key: person.certificate_key(),
            blocks,
        })
    }

    fn is_server_operator(&self, key: &str) -> bool {
        !self.moderation.operators.is_empty()
            && self
                .people
                .get(key)
                .and_then(Person::certificate_key)
                .is_some_and(|fingerprint| self.moderation.operators.contains(&fingerprint))
    }

    /// True if the person `key` may moderate the room `room_key`.
    fn is_room_operator(&self, key: &str, room_key: &str) -> bool {
        if self.is_server_operator(key) {
            return true;
        }
        let Some(rules) = self.moderation.rooms.get(room_key) else {
            return false;
        };
        let person_key = self.people.get(key).and_then(Person::certificate_key);
        match person_key {
            Some(fingerprint) => rules.ops.contains(&fingerprint),
            None => rules.guest_ops.iter().any(|nick| nick == key),
        }
    }

    /// Why someone connecting as `nick` with `certificate_key` from
    /// `peer` is refused by a server ban, if one names them.
    pub(super) fn server_ban_refusal(
        &mut self,
        nick: &Nick,
        certificate_key: Option<Fingerprint>,
        peer: SocketAddr,
        out: &mut Vec<Output>,
    ) -> Option<String> {
        if self.moderation.server_bans.is_empty() {
            return None;
        }
        let now = self.now();
        let before = self.moderation.server_bans.len();
        self.moderation.server_bans.retain(|ban| ban.live(now));
        // Shared, every server drops what ended by itself: a copy that may
        // be stale is not sent to overwrite the others'.
        if self.moderation.server_bans.len() != before && self.others.is_none() {
            self.save_server_bans(out);
        }
        let who = Identifiers {
            nick: nick.key(),
            key: certificate_key,
            blocks: vec![Block::of(peer.ip())],
        };
        let ban = self
            .moderation
            .server_bans
            .iter()
            .find(|ban| ban.names(&who))?;
        Some(format!("you are banned from this server {}", ban.told(now)))
    }

    /// Why session `id` (of the person `key`) may not enter the room
    /// `room_key`, if it may not: a ban, or an invitation it lacks. An
    /// invitation is used up on the way in.
    pub(super) fn entry_refusal(
        &mut self,
        id: ClientId,
        key: &str,
        room: &Room,
        out: &mut Vec<Output>,
    ) -> Option<String> {
        let room_key = room.key();
        if !self.moderation.rooms.contains_key(&room_key) {
            if self.reachable() {
                self.entered_unchecked(&room_key, key);
            }
            return None;
        }
        let now = self.now();
        let mut who = self.identifiers(key)?;
        // The session entering may be new (a second one, from elsewhere).
        if let Some(session) = self.sessions.get(&id) {
            let block = Block::of(session.peer.ip());
            if !who.blocks.contains(&block) {
                who.blocks.push(block);
            }
        }
        // A room nobody is in and nobody moderates is the next comer's
        // (`made_room`), whatever mode was left on it. Shared, that holds
        // only while cut off from the others: otherwise a room nobody here
        // is in has no rules here yet, and whoever enters is checked once
        // they come (`entered_unchecked`, `recent_rules`).
        let unowned = !self
            .moderation
            .rooms
            .get(&room_key)
            .is_some_and(RoomRules::has_operators)
            && self
                .room_names
                .get(&room_key)
                .and_then(|room| self.rooms.get(room))
                .is_none_or(|state| state.members.is_empty());
        // A ban holds for the room's operators too (one may ban another);
        // only the server's are above it.
        let server_op = self.is_server_operator(key);
        let operator = self.is_room_operator(key, &room_key);
        let rules = self.moderation.rooms.get_mut(&room_key)?;
        let expired = rules.drop_expired(now);
        let ban = rules.bans.iter().find(|ban| ban.names(&who));
        let refusal = match ban {
            Some(ban) if !server_op => {
                Some(format!("you are banned from {room} {}", ban.told(now)))
            }
            _ if !rules.invite_only || operator || unowned => None,
            _ => match rules.invited.iter().position(|target| target.names(&who)) {
                Some(at) => {
                    rules.invited.remove(at);
                    None
                }
                None => Some(format!(
                    "{room} is invite-only: an operator of it must /invite you"
                )),
            },
        };
        let used_invitation = refusal.is_none() && rules.invite_only && !operator && !unowned;
        // Shared, every server drops what ended by itself (see above).
        let expired = expired && self.others.is_none();
        if expired || used_invitation {
            self.save_rules(&room_key, out);
        }
        refusal
    }

    /// The person `key` just entered `room`, which had nobody in it: it
    /// is theirs to moderate if nobody else is its operator (never the
    /// lobby's).
    pub(super) fn made_room(&mut self, key: &str, room: RoomId, out: &mut Vec<Output>) {
        let Some(name) = self.rooms.get(&room).map(|state| state.name.clone()) else {
            return;
        };
        let room_key = name.key();
        if name.as_str() == protocol::LOBBY
            || self
                .moderation
                .rooms
                .get(&room_key)
                .is_some_and(RoomRules::has_operators)
        {
            return;
        }
        if self.reachable() {
            // Empty here is not empty everywhere: decided once the others
            // have told the room's past (`recent_rules`).
            // Rooms left before their past came are forgotten here.
            let rooms = &self.rooms;
            self.moderation
                .makers
                .retain(|room, _| rooms.contains_key(room));
            self.moderation.makers.insert(room, key.to_owned());
            return;
        }
        self.make_operator(key, room, out);
    }

    /// The person `key` made `room`, and is its operator.
    fn make_operator(&mut self, key: &str, room: RoomId, out: &mut Vec<Output>) {
        let Some(name) = self.rooms.get(&room).map(|state| state.name.clone()) else {
            return;
        };
        let room_key = name.key();
        let Some(person) = self.people.get(key) else {
            return;
        };
        // Cut off from the other servers, this one cannot know whether the
        // room is new everywhere: its maker holds it by nick, here only, so
        // that no operator by key reaches the others when the link is back
        // (the room may have operators there, and may be invite-only).
        let cut_off = self.others.is_some() && !self.reachable();
        let fingerprint = person.certificate_key().filter(|_| !cut_off);
        if fingerprint.is_none() && self.guest_op_rooms(key) >= GUEST_OP_ROOMS {
            let text = format!(
                "{name} has no operator: you are one of {GUEST_OP_ROOMS} rooms already, \
                 the most a guest may be"
            );
            for &id in &person.sessions {
                out.push(to(id, ServerLine::Notice(&text)));
            }
            return;
        }
        // Not told: the room's first lines stay what they were, and
        // `/bans` names its operators.
        log::info!("{} made {name} and is its operator", person.nick);
        let rules = self.moderation.rooms.entry(room_key.clone()).or_default();
        match fingerprint {
            Some(fingerprint) => rules.ops.push(fingerprint),
            None => rules.guest_ops.push(key.to_owned()),
        }
        if fingerprint.is_some() {
            self.save_rules(&room_key, out);
        }
    }

    /// How many rooms the guest `key` is an operator of.
    pub(super) fn guest_op_rooms(&self, key: &str) -> usize {
        let rooms = self.moderation.rooms.values();
        rooms
            .filter(|rules| rules.guest_ops.iter().any(|nick| nick == key))
            .count()
    }

    /// The person `key` is no longer here under that nick: operators by
    /// nick hold only while connected under it, and so do invitations by
    /// nick (a guest's), lest the next to take the nick use one. Rules
    /// only guests made go with the last of their operators.
    pub(super) fn forget_guest_ops(&mut self, key: &str, out: &mut Vec<Output>) {
        let mut changed = Vec::new();
        self.moderation.rooms.retain(|room_key, rules| {
            let before = rules.guest_ops.len() + rules.invited.len();
            rules.guest_ops.retain(|nick| nick != key);
            rules
                .invited
                .retain(|who| !matches!(who, Target::Nick(nick) if nick == key));
            if rules.guest_ops.len() + rules.invited.len() != before {
                changed.push((room_key.clone(), rules.kept));
            }
            !rules.is_empty()
        });
        // Shared, the other servers hold these rules too (see `save_rules`):
        // whole for a room here; for one nobody here is in, only the
        // operators by nick are held here, and the rules go only if they
        // were the guests' alone.
        if self.others.is_some() {
            for (room_key, kept) in changed {
                if self.room_names.contains_key(&room_key) || !kept {
                    self.save_rules(&room_key, out);
                }
            }
        }
    }

    /// Sets the person's mute flag for the room they are in, so that a
    /// line costs one flag read when nobody is muted.
    pub(super) fn refresh_muted(&mut self, key: &str) {
        if self.moderation.rooms.is_empty() {
            // Nothing is moderated: no clock, no lookup.
            if let Some(person) = self.people.get_mut(key) {
                person.muted = false;
            }
            return;
        }
        let now = self.now();
        // A server operator is above every room's mutes.
        let muted = !self.is_server_operator(key)
            && self.identifiers(key).is_some_and(|who| {
                let room_key = self.people.get(key).and_then(|p| self.room_key(p.room));
                room_key
                    .and_then(|room_key| self.moderation.rooms.get(&room_key))
                    .is_some_and(|rules| rules.mutes.iter().any(|mute| mute.holds(now, &who)))
            });
        if let Some(person) = self.people.get_mut(key) {
            person.muted = muted;
        }
    }

    /// [`refresh_muted`](Chat::refresh_muted) for everyone in a room.
    fn refresh_room_mutes(&mut self, room_key: &str) {
        let Some(room) = self.room_names.get(room_key) else {
            return;
        };
        let members: Vec<String> = self.rooms[room].members.iter().cloned().collect();
        for key in members {
            self.refresh_muted(&key);
        }
    }

    /// Session `id`, whose person is flagged muted, is about to speak: true
    /// (and an error that says who muted them, why and for how long) if a
    /// mute still holds; else the flag is cleared and the ended mute
    /// forgotten.
    pub(super) fn still_muted(&mut self, id: ClientId, out: &mut Vec<Output>) -> bool {
        let Some(key) = self.sessions.get(&id).map(|s| s.person.clone()) else {
            return true;
        };
        let now = self.now();
        let Some(who) = self.identifiers(&key) else {
            return true;
        };
        if self.is_server_operator(&key) {
            // Named one since the flag was set (`--operators` reloaded).
            self.refresh_muted(&key);
            return false;
        }
        let room = self.people[&key].room;
        let Some(room_key) = self.room_key(room) else {
            return false;
        };
        let told = self.moderation.rooms.get_mut(&room_key).and_then(|rules| {
            let mute = rules.mutes.iter().find(|mute| mute.holds(now, &who))?;
            Some(mute.told(now))
        });
        if let Some(told) = told {
            let text = format!("you are muted in {} {told}", self.room_name(room));
            out.push(to(id, ServerLine::Error(&text)));
            return true;
        }
        let shared = self.others.is_some();
        if self
            .moderation
            .rooms
            .get_mut(&room_key)
            .is_some_and(|rules| rules.drop_expired(now))
            && !shared
        {
            self.save_rules(&room_key, out);
        }
        self.refresh_muted(&key);
        false
    }

    /// Why the person `key` may not set the topic of `room`, if not.
    pub(super) fn topic_refusal(&self, key: &str, room: RoomId) -> Option<String> {
        let room_key = self.room_key(room)?;
        let locked = self.moderation.rooms.get(&room_key)?.topic_locked;
        (locked && !self.is_room_operator(key, &room_key)).then(|| {
            format!(
                "the topic of {} is locked: only its operators may set it",
                self.room_name(room)
            )
        })
    }

    /// Tells the store a room's rules as they are now, and forgets rules
    /// that hold nothing.
    fn save_rules(&mut self, room_key: &str, out: &mut Vec<Output>) {
        let now = self.now();
        let rules = self
            .moderation
            .rooms
            .get(room_key)
            .and_then(|rules| rules.to_text(now, self.others.is_some()));
        if self
            .moderation
            .rooms
            .get(room_key)
            .is_some_and(RoomRules::is_empty)
        {
            self.moderation.rooms.remove(room_key);
        }
        out.push(Output::Save(Save::Rules {
            room: room_key.to_owned(),
            rules,
        }));
    }

    fn save_server_bans(&self, out: &mut Vec<Output>) {
        let now = self.now();
        let lines: Vec<String> = sanction_lines("ban", &self.moderation.server_bans, now).collect();
        let text = (!lines.is_empty()).then(|| lines.join("\n"));
        out.push(Output::Save(Save::ServerBans(text)));
    }
}

//! Moderation with other servers: rules and server bans as they arrive
//! (applied to the people here), who makes a room once its past is told,
//! kicks and kills done for or by another server, `/invite` and sending to
//! the lobby. Not how they travel (`Elsewhere`), nor the other commands.

use std::collections::VecDeque;
use std::sync::Arc;

use super::commands::not_in_lobby;
use super::rules::{
    check_shared_rules, check_shared_server_bans, Identifiers, MAX_SHARED_REASON_LEN,
    MAX_SHARED_RULES_LEN,
};
use super::{Actor, Chat, ClientId, Output, Person, RoomId, RoomRules, Target};
use crate::chat::{to as to_one, to_room, CloseReason, Keep, LINK_DOWN_MSG};
use crate::elsewhere::{Act, Ask, Deed, Sent, Waiting};
use crate::protocol::{Nick, Notice, Room, ServerLine, LOBBY};

/// The most lines said in one room while its past is awaited whose
/// speakers are noted: past it, Redis is far behind (the link itself
/// holds back at most 16 MiB of lines, some 100,000 short ones), and
/// further lines are checked against the speaker they name, as they are
/// when the past comes.
const MOST_SPEAKERS_NOTED: usize = 1 << 16;

/// Who said a line that waits for its room's past, as they were then.
#[derive(Debug)]
pub(in crate::chat) struct Speaker {
    /// The line, shared with what waits: known by its address.
    line: Arc<str>,
    /// Whom bans and mutes name.
    who: Identifiers,
    /// Whether they were a server operator, above a room's bans.
    server_op: bool,
}

impl Chat {
    /// A room's rules as every server has them now (`None`: it has none):
    /// they replace this server's, and whoever here is in the room and
    /// now banned from it is sent to the lobby, with the reason, as a ban
    /// made here does. A mute holds from the next line on.
    pub(in crate::chat) fn rules_arrived(
        &mut self,
        room_key: &str,
        rules: Option<&str>,
        out: &mut Vec<Output>,
    ) {
        // Shared, rules are held for the rooms people here are in (and
        // come again with a room's past): not for every room anyone
        // moderates anywhere. A guest operator's stay theirs meanwhile.
        let held = self.room_names.contains_key(room_key)
            || self
                .moderation
                .rooms
                .get(room_key)
                .is_some_and(|rules| !rules.guest_ops.is_empty());
        if self.others.is_some() && !held {
            return;
        }
        let text = rules.unwrap_or_default();
        if let Err(why) = check_shared_rules(text).and_then(|()| self.restore_rules(room_key, text))
        {
            log::warn!("the rules of {room_key} from the other servers are refused: {why}");
            return;
        }
        let Some(&room) = self.room_names.get(room_key) else {
            return;
        };
        let now = self.now();
        let mut banned = Vec::new();
        if let (Some(rules), Some(state)) =
            (self.moderation.rooms.get(room_key), self.rooms.get(&room))
        {
            for key in &state.members {
                // The server's operators are above a room's bans.
                if self.is_server_operator(key) {
                    continue;
                }
                let Some(who) = self.identifiers(key) else {
                    continue;
                };
                let ban = rules.bans.iter().find(|ban| ban.holds(now, &who));
                if let Some(ban) = ban {
                    let why = match &ban.reason {
                        Some(reason) => format!("banned: {reason}"),
                        None => "banned".to_owned(),
                    };
                    banned.push((key.clone(), ban.by.clone(), why));
                }
            }
        }
        for (key, by, why) in banned {
            self.move_to_lobby(room, &by, &key, Some(&why), out);
        }
    }

    /// The server bans as every server has them now: they replace this
    /// server's, and whoever here one names is told and disconnected, as
    /// by a ban made here.
    pub(in crate::chat) fn server_bans_arrived(
        &mut self,
        bans: Option<&str>,
        out: &mut Vec<Output>,
    ) {
        let text = bans.unwrap_or_default();
        if let Err(why) =
            check_shared_server_bans(text).and_then(|()| self.restore_server_bans(text))
        {
            log::warn!("the server bans from the other servers are refused: {why}");
            return;
        }
        let count = self.moderation.server_bans.len();
        log::info!("{count} server bans, as the other servers have them");
        let now = self.now();
        let mut named = Vec::new();
        for key in self.people.keys() {
            let Some(who) = self.identifiers(key) else {
                continue;
            };
            let ban = self
                .moderation
                .server_bans
                .iter()
                .find(|ban| ban.holds(now, &who));
            if let Some(ban) = ban {
                let told = format!("you are banned from this server {}", ban.told(now));
                let public = format!("banned from the server by {}", ban.by);
                named.push((key.clone(), told, public));
            }
        }
        for (key, told, public) in named {
            self.disconnect(&key, CloseReason::Banned, &told, &public, out);
        }
    }

    /// A room this server joined: its rules as the others keep them, and
    /// whether it is `fresh` (nothing of it in Redis: nobody on any server
    /// made it before). Whoever entered it here while nobody here was in
    /// it is its operator only if it is fresh; a room whose keys exist
    /// is not new, even with nobody in it now. `rules` is `None` if they
    /// could not be read: this server's stay.
    pub(in crate::chat) fn recent_rules(
        &mut self,
        room: RoomId,
        rules: Option<Option<&str>>,
        fresh: bool,
        out: &mut Vec<Output>,
    ) {
        let maker = self.moderation.makers.remove(&room);
        let Some(room_key) = self.room_key(room) else {
            return;
        };
        if let Some(rules) = rules {
            self.rules_arrived(&room_key, rules, out);
        }
        self.check_unchecked(room, &room_key, out);
        let Some(maker) = maker else {
            return;
        };
        let here = self
            .people
            .get(&maker)
            .is_some_and(|person| person.room == room);
        let operated = self
            .moderation
            .rooms
            .get(&room_key)
            .is_some_and(RoomRules::has_operators);
        if fresh && here && !operated {
            self.make_operator(&maker, room, out);
        }
    }

    /// The others cannot be reached, so no room's past will come soon:
    /// the rooms made here meanwhile get no operator (as a room made on
    /// another server would not).
    pub(in crate::chat) fn forget_makers(&mut self) {
        self.moderation.makers.clear();
        self.moderation.unchecked.clear();
        self.moderation.speakers.clear();
    }

    /// `room` emptied here, or its past came: who spoke there meanwhile
    /// need not be known any more.
    pub(in crate::chat) fn forget_speakers(&mut self, room: RoomId) {
        self.moderation.speakers.remove(&room);
    }

    /// How many speakers are noted, in every room.
    #[cfg(test)]
    pub(in crate::chat) fn speakers_noted(&self) -> usize {
        self.moderation.speakers.values().map(Vec::len).sum()
    }

    /// Shared, nobody here is in the room `room_key` any more: its rules
    /// are the others' to keep (and come again with its past), except
    /// who is its operator by nick here, which only this server knows.
    pub(in crate::chat) fn rules_left_behind(&mut self, room_key: &str) {
        if self.others.is_none() {
            return;
        }
        let Some(rules) = self.moderation.rooms.remove(room_key) else {
            return;
        };
        if !rules.guest_ops.is_empty() {
            // `kept`: someone with a certificate stands behind the rules
            // the others keep, which the guests' going must leave alone.
            let guest_ops = RoomRules {
                kept: rules.is_durable(),
                guest_ops: rules.guest_ops,
                ..RoomRules::default()
            };
            self.moderation.rooms.insert(room_key.to_owned(), guest_ops);
        }
    }

    /// The person `key` enters the room `room_key` with no rules known
    /// here: if its past (and so its rules) is still to come, they are
    /// checked against them then (`recent_rules`).
    pub(super) fn entered_unchecked(&mut self, room_key: &str, key: &str) {
        let pending = self
            .room_names
            .get(room_key)
            .and_then(|room| self.rooms.get(room))
            .is_none_or(|state| !state.known);
        if !pending {
            return;
        }
        // Rooms left before their past came are forgotten here.
        let names = &self.room_names;
        self.moderation
            .unchecked
            .retain(|room_key, _| names.contains_key(room_key));
        let keys = self
            .moderation
            .unchecked
            .entry(room_key.to_owned())
            .or_default();
        if !keys.iter().any(|known| known == key) {
            keys.push(key.to_owned());
        }
    }

    /// Whoever entered `room` here before its rules were known, checked
    /// now as they would have been on the way in: in an invite-only room,
    /// one neither invited nor an operator is sent to the lobby (an
    /// invitation is used up). Bans are `rules_arrived`'s, for everyone.
    fn check_unchecked(&mut self, room: RoomId, room_key: &str, out: &mut Vec<Output>) {
        let keys = self
            .moderation
            .unchecked
            .remove(room_key)
            .unwrap_or_default();
        let invite_only = self
            .moderation
            .rooms
            .get(room_key)
            .is_some_and(|rules| rules.invite_only);
        if !invite_only {
            return;
        }
        let room_name = self.room_name(room).to_owned();
        let mut used = false;
        for key in keys {
            let here = self.people.get(&key).is_some_and(|p| p.room == room);
            if !here || self.is_room_operator(&key, room_key) {
                continue;
            }
            let Some(who) = self.identifiers(&key) else {
                continue;
            };
            let Some(rules) = self.moderation.rooms.get_mut(room_key) else {
                return;
            };
            if let Some(at) = rules.invited.iter().position(|target| target.names(&who)) {
                rules.invited.remove(at);
                used = true;
                continue;
            }
            let why = format!("{room_name} is invite-only: an operator of it must /invite you");
            log::info!("{key}: refused {room_name} once its rules came: {why}");
            for &id in &self.people[&key].sessions {
                out.push(to_one(id, ServerLine::Error(&why)));
            }
            self.change_room(&key, room, Room::lobby(), out);
        }
        if used {
            self.save_rules(room_key, out);
        }
    }

    /// Shared, the line just put in `out` (a chat or action line of `id`)
    /// was said in a room whose past is awaited: who said it, as they are
    /// now, goes with it until the past comes (`let_through`), so that it
    /// is checked against them even if they change nick or leave
    /// meanwhile. Alone, or once the past is known, nothing to do. Noted
    /// even while the chat thinks the others out of reach: the link may be
    /// back already, and queue the line for the past before the chat is
    /// told (an outage forgets the notes, `forget_makers`; so does the
    /// room emptying, or its past coming, `forget_speakers`).
    ///
    /// Inlined, so that alone a line costs one branch, not a call.
    #[inline]
    pub(in crate::chat) fn note_speaker(&mut self, id: ClientId, out: &[Output]) {
        if self.others.is_some() {
            self.note_shared_speaker(id, out);
        }
    }

    /// [`Chat::note_speaker`], shared.
    fn note_shared_speaker(&mut self, id: ClientId, out: &[Output]) {
        let Some(Output::ToRoom(line)) = out.last() else {
            return;
        };
        let awaited = self.rooms.get(&line.room).is_some_and(|state| !state.known);
        let Some(key) = self.person_of(id).filter(|_| awaited).map(|p| p.nick.key()) else {
            return;
        };
        let Some(who) = self.identifiers(&key) else {
            return;
        };
        let speaker = Speaker {
            line: Arc::clone(&line.line),
            who,
            server_op: self.is_server_operator(&key),
        };
        let noted = self.moderation.speakers.entry(line.room).or_default();
        if noted.len() < MOST_SPEAKERS_NOTED {
            noted.push(speaker);
        }
    }

    /// Who said a chat or action `line`, read from it: as they are now if
    /// they are here, else by nick alone.
    fn speaker_named(&self, line: &Arc<str>) -> Option<Speaker> {
        let said = line
            .strip_prefix("chat ")
            .or_else(|| line.strip_prefix("action "))?;
        let nick = Nick::parse(said.split(' ').next()?).ok()?;
        let key = nick.key();
        let (who, server_op) = match self.identifiers(&key) {
            Some(who) => (who, self.is_server_operator(&key)),
            None => {
                let who = Identifiers {
                    nick: nick.as_str().to_owned(),
                    key: None,
                    blocks: Vec::new(),
                };
                (who, false)
            }
        };
        Some(Speaker {
            line: Arc::clone(line),
            who,
            server_op,
        })
    }

    /// Lines said and rules changed here while a room's past was awaited,
    /// in order: each line goes to the others now, unless a ban or mute
    /// in the room's rules names its speaker as they were when they said
    /// it (then only the log says so); each change goes in its place, to
    /// be added to the rules they have.
    pub(in crate::chat) fn let_through(&mut self, waiting: Vec<Waiting>, out: &mut Vec<Output>) {
        let now = self.now();
        // In the order the lines were said, as they come back: the one
        // sought is nearly always the first.
        let mut speakers: VecDeque<Speaker> = VecDeque::new();
        for waited in waiting {
            let line = match waited {
                Waiting::Line(line) => line,
                Waiting::Rules { room, rules } => {
                    out.push(Output::Elsewhere(Ask::Rules { room, rules }));
                    continue;
                }
            };
            if let Some(more) = self.moderation.speakers.remove(&line.room) {
                speakers.extend(more);
            }
            let noted = speakers
                .iter()
                .position(|s| Arc::ptr_eq(&s.line, &line.line));
            // A line nobody was noted for (past the notes' bound) is
            // checked against the speaker it names, as they are now; one
            // that names none is no one's (a notice).
            let speaker = match noted.and_then(|at| speakers.remove(at)) {
                Some(speaker) => speaker,
                None => match self.speaker_named(&line.line) {
                    Some(speaker) => speaker,
                    None => {
                        out.push(Output::ToRoom(line));
                        continue;
                    }
                },
            };
            let rules = self
                .room_key(line.room)
                .and_then(|room_key| self.moderation.rooms.get(&room_key));
            let breaks = rules.is_some_and(|rules| {
                !speaker.server_op
                    && rules
                        .bans
                        .iter()
                        .chain(&rules.mutes)
                        .any(|sanction| sanction.holds(now, &speaker.who))
            });
            if breaks {
                log::info!(
                    "{}: a line said before the rules of {} came breaks them; dropped",
                    speaker.who.nick,
                    self.room_name(line.room)
                );
                continue;
            }
            out.push(Output::ToRoom(line));
        }
    }
}

impl Chat {
    /// `nick` is not here (`why` says so): shared, with the others in
    /// reach, the kick or kill goes to whichever server has them
    /// ([`Ask::Act`]), which does it; the room hears it from there.
    pub(super) fn act_elsewhere(
        &self,
        actor: &Actor,
        nick: &str,
        deed: Deed,
        reason: Option<&str>,
        why: String,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        if self.others.is_none() || Nick::parse(nick).is_err() {
            return Err(why);
        }
        if !self.reachable() {
            return Err(format!(
                "{why} here, and the link to the other servers is down: try again when it \
                 is back"
            ));
        }
        let what = match &deed {
            Deed::Kick(room) => format!("send them from {room} to the lobby"),
            Deed::Kill => "disconnect them".to_owned(),
        };
        log::info!("{} asks the server of {nick} to {what}", actor.nick);
        let key = self
            .people
            .get(&actor.key)
            .and_then(Person::certificate_key);
        let act = Act {
            by: actor.nick.clone(),
            server_op: actor.server_op,
            key,
            deed,
            reason: reason.map(str::to_owned),
        };
        out.push(Output::Elsewhere(Ask::Act {
            from: actor.id,
            to: nick.to_ascii_lowercase(),
            act: Box::new(act),
        }));
        Ok(())
    }

    /// A kick or kill from a moderator on another server for `to`, here:
    /// done as if made here, unless `to` is no longer in the room, or is
    /// a server operator and the moderator is not, or it is a kill by
    /// someone who is not a server operator (by key, among this server's
    /// `--operators`; what the act says of itself is not taken), or a
    /// kick by someone who is
    /// not an operator of the room in this server's copy of its rules
    /// (then only the log says so). A room's operators by nick (guests)
    /// are known only on their own server: a guest's kick is obeyed only
    /// in a room no one with a certificate is an operator of.
    pub(in crate::chat) fn act_in(&mut self, to: &str, act: Act, out: &mut Vec<Output>) {
        let Some(person) = self.people.get(to) else {
            return;
        };
        // The sender's word that it is a server operator is anyone's who
        // can write to Redis: only a key of this server's own operators
        // counts (linked servers share one `--operators` file).
        let server_op = act
            .key
            .is_some_and(|key| self.moderation.operators.contains(&key));
        // A server sends a kill only for one of its server operators;
        // whoever else writes one into Redis is not obeyed.
        if act.deed == Deed::Kill && !server_op {
            log::warn!(
                "a kill of {to} by {}, not a server operator: ignored",
                act.by
            );
            return;
        }
        if self.is_server_operator(to) && !server_op {
            log::info!("{} from elsewhere: {to} is a server operator", act.by);
            return;
        }
        let reason = act.reason.as_deref();
        match &act.deed {
            Deed::Kick(room) => {
                let room_key = room.to_ascii_lowercase();
                if !server_op && !self.operates_elsewhere(&act, &room_key) {
                    log::warn!(
                        "a kick of {to} from {room} by {}, not an operator of it: ignored",
                        act.by
                    );
                    return;
                }
                let room = self.room_names.get(&room_key).copied();
                match room {
                    Some(room) if room == person.room && self.room_name(room) != LOBBY => {
                        self.move_to_lobby(room, &act.by, to, reason, out);
                    }
                    _ => log::info!("{} from elsewhere: {to} is not in that room", act.by),
                }
            }
            Deed::Kill => {
                let mut public = format!("disconnected by {}", act.by);
                if let Some(reason) = reason {
                    public.push_str(": ");
                    public.push_str(reason);
                }
                log::info!("{} disconnected {to} from another server", act.by);
                let told = format!("you were {public}");
                self.disconnect(to, CloseReason::Killed, &told, &public, out);
            }
        }
    }

    /// Whether the moderator of `act`, on another server, is an operator
    /// of the room `room_key` by this server's copy of its rules: by their
    /// certificate's key; without one, only if nobody is by key.
    fn operates_elsewhere(&self, act: &Act, room_key: &str) -> bool {
        let rules = self.moderation.rooms.get(room_key);
        match act.key {
            Some(key) => rules.is_some_and(|rules| rules.ops.contains(&key)),
            None => rules.is_none_or(|rules| rules.ops.is_empty()),
        }
    }

    /// What became of a kick or kill `from` asked of `to`'s server.
    pub(in crate::chat) fn act_sent(
        &self,
        from: ClientId,
        to: &str,
        act: &Act,
        sent: Sent,
        out: &mut Vec<Output>,
    ) {
        if !self.sessions.contains_key(&from) {
            return;
        }
        let text = match (sent, &act.deed) {
            // The room hears it from their server.
            (Sent::Delivered, Deed::Kick(_)) => return,
            (Sent::Delivered, Deed::Kill) => {
                return out.push(to_one(
                    from,
                    ServerLine::Notice(&format!("you disconnected {to}")),
                ));
            }
            (Sent::NoOne, _) => format!("no user named {to} is connected"),
            (Sent::Down, _) => LINK_DOWN_MSG.to_owned(),
        };
        out.push(to_one(from, ServerLine::Error(&text)));
    }
}

impl Chat {
    /// `/invite NICK`: someone here by their certificate's key if they
    /// have one, else by nick; shared, someone on another server by nick.
    pub(super) fn invite(
        &mut self,
        actor: &Actor,
        nick: &str,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        not_in_lobby(actor, "invited")?;
        let (target, name, sessions) = match self.present(nick) {
            Ok(key) => {
                let person = &self.people[&key];
                let target = match person.certificate_key() {
                    Some(fingerprint) => Target::Key(fingerprint),
                    None => Target::Nick(key.clone()),
                };
                (target, person.nick.to_string(), person.sessions.clone())
            }
            // Shared, someone on another server is invited by nick (a
            // certificate is read only where its holder is), and told by
            // the room's notice if they are in it, else not at all.
            Err(_) if self.others.is_some() && Nick::parse(nick).is_ok() => {
                let target = Target::Nick(nick.to_ascii_lowercase());
                (target, nick.to_owned(), Vec::new())
            }
            Err(why) => return Err(why),
        };
        let invited = self
            .moderation
            .rooms
            .get(&actor.room_key)
            .is_some_and(|rules| rules.invited.contains(&target));
        if !invited {
            let count = |rules: &super::RoomRules| rules.invited.len();
            let instead = "each is used up on the way in";
            self.room_for_one_more(actor, "invitations", count, instead)?;
            self.shared_rules_fit(actor, |rules| rules.invited.push(target.clone()))?;
        }
        let rules = self
            .moderation
            .rooms
            .entry(actor.room_key.clone())
            .or_default();
        if !rules.invited.contains(&target) {
            rules.invited.push(target);
        }
        let text = format!("{} invited {name} to {}", actor.nick, actor.room_name);
        self.announce(actor, &text, None, out);
        let text = format!(
            "{} invited you to {}: /join {} to go there",
            actor.nick, actor.room_name, actor.room_name
        );
        for id in sessions {
            out.push(to_one(id, ServerLine::Notice(&text)));
        }
        self.save_rules(&actor.room_key, out);
        Ok(())
    }

    /// Sends the person `key` from `room` to the lobby, on the word of
    /// `by` (here, or on another server); the room (them included) is
    /// told who did it and why.
    pub(in crate::chat) fn move_to_lobby(
        &mut self,
        room: RoomId,
        by: &str,
        key: &str,
        reason: Option<&str>,
        out: &mut Vec<Output>,
    ) {
        let Some(person) = self.people.get(key) else {
            return;
        };
        let room_name = self.room_name(room).to_owned();
        let notice = Notice::Kicked {
            nick: person.nick.as_str(),
            room: &room_name,
            by,
            reason,
        }
        .to_string();
        log::info!(
            "{by} sent {} from {room_name} to the lobby: {}",
            person.nick,
            reason.unwrap_or("-")
        );
        out.push(to_room(
            room,
            ServerLine::Notice(&notice),
            None,
            Keep::Nothing,
        ));
        // Shared, the room hears it when it is back from the others, by
        // when they are in the lobby: they are told it now instead.
        if self.reachable() {
            for &id in &person.sessions {
                out.push(to_one(id, ServerLine::Notice(&notice)));
            }
        }
        self.change_room(key, room, Room::lobby(), out);
    }

    /// Shared, refuses a reason longer than the others take (see
    /// [`MAX_SHARED_REASON_LEN`]). Alone, any reason that fits a line.
    pub(super) fn shared_reason_fits(&self, reason: Option<&str>) -> Result<(), String> {
        match reason {
            Some(reason) if self.others.is_some() && reason.len() > MAX_SHARED_REASON_LEN => {
                Err(format!(
                    "that reason is {} bytes; linked servers keep at most \
                     {MAX_SHARED_REASON_LEN}: say it shorter",
                    reason.len()
                ))
            }
            _ => Ok(()),
        }
    }

    /// Shared, refuses a change of the actor's room's rules that would
    /// make them longer than the others take (see
    /// [`MAX_SHARED_RULES_LEN`]). Alone, the counts bound them.
    pub(super) fn shared_rules_fit(
        &self,
        actor: &Actor,
        change: impl FnOnce(&mut RoomRules),
    ) -> Result<(), String> {
        if self.others.is_none() {
            return Ok(());
        }
        let mut rules = self
            .moderation
            .rooms
            .get(&actor.room_key)
            .cloned()
            .unwrap_or_default();
        change(&mut rules);
        let len = rules.to_text(self.now(), true).map_or(0, |text| text.len());
        if len <= MAX_SHARED_RULES_LEN {
            return Ok(());
        }
        Err(format!(
            "the rules of {} would take {len} bytes; linked servers keep at most \
             {MAX_SHARED_RULES_LEN}: lift some bans or mutes first, or give shorter reasons",
            actor.room_name
        ))
    }
}

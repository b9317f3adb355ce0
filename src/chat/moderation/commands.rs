//! What each moderation command does, once `moderation` has the state:
//! who may, what changes, and what the room is told. Not the rules'
//! values or their text (`rules`), nor `/invite` and sending someone to
//! the lobby, which reach other servers (`shared`).

use super::rules::MAX_PER_ROOM;
use super::GUEST_OP_ROOMS;
use super::{Actor, Sanction, Target};
use crate::chat::{reply, to, to_room, Chat, ClientId, CloseReason, Keep, Output, Person, RoomId};
use crate::elsewhere::Deed;
use crate::protocol::{self, Mode, Moderation, Sentence, ServerLine};
use crate::tls::Fingerprint;

impl Chat {
    /// A moderation command from session `id`.
    pub(in crate::chat) fn moderate(
        &mut self,
        id: ClientId,
        command: Moderation<'_>,
        out: &mut Vec<Output>,
    ) {
        let Some(person) = self.person_of(id) else {
            return;
        };
        let key = person.nick.key();
        let certified = person.certificate_key().is_some();
        let room_name = self.room_name(person.room).to_owned();
        let actor = Actor {
            id,
            nick: person.nick.to_string(),
            room: person.room,
            room_key: room_name.to_ascii_lowercase(),
            room_name,
            server_op: self.is_server_operator(&key),
            key,
        };
        let room_op = actor.server_op || self.is_room_operator(&actor.key, &actor.room_key);
        let changes_rules = !matches!(
            command,
            Moderation::Bans
                | Moderation::Mode(None)
                | Moderation::Kick { .. }
                | Moderation::ServerBan(_)
                | Moderation::ServerUnban(_)
                | Moderation::Kill { .. }
        );
        let done = match command {
            Moderation::Bans => {
                self.list_rules(&actor, out);
                Ok(())
            }
            Moderation::Mode(None) => {
                out.push(reply(id, Ok(self.modes_text(&actor))));
                Ok(())
            }
            Moderation::ServerBan(_) | Moderation::ServerUnban(_) | Moderation::Kill { .. }
                if !actor.server_op =>
            {
                Err(
                    "only server operators may do that: their keys are in the server's \
                     --operators file"
                        .to_owned(),
                )
            }
            Moderation::ServerBan(sentence) => self.server_ban(&actor, sentence, out),
            Moderation::ServerUnban(target) => self.server_unban(&actor, target, out),
            Moderation::Kill { nick, reason } => self.kill(&actor, nick, reason, out),
            _ if !room_op => Err(format!(
                "you are not an operator of {}: /bans lists who is",
                actor.room_name
            )),
            Moderation::Op(nick) => self.op(&actor, nick, out),
            Moderation::Deop(nick) => self.deop(&actor, nick, out),
            Moderation::Kick { nick, reason } => self.kick(&actor, nick, reason, out),
            Moderation::Ban(sentence) => self.ban(&actor, sentence, out),
            Moderation::Unban(target) => self.lift(&actor, target, false, out),
            Moderation::Mute(sentence) => self.mute(&actor, sentence, out),
            Moderation::Unmute(target) => self.lift(&actor, target, true, out),
            Moderation::Invite(nick) => self.invite(&actor, nick, out),
            Moderation::Mode(Some(mode)) => self.set_mode(&actor, mode, out),
        };
        match done {
            Err(why) => out.push(to(id, ServerLine::Error(&why))),
            Ok(()) if certified && changes_rules => self.keep_rules(&actor.room_key, out),
            Ok(()) => {}
        }
    }

    /// Someone with a certificate changed a room's rules: from now on
    /// they are saved and outlive its operators by nick.
    fn keep_rules(&mut self, room_key: &str, out: &mut Vec<Output>) {
        let Some(rules) = self.moderation.rooms.get_mut(room_key) else {
            return;
        };
        if !rules.kept {
            rules.kept = true;
            self.save_rules(room_key, out);
        }
    }

    /// Refuses one more entry in a list of the actor's room's rules that
    /// already holds [`MAX_PER_ROOM`]; `count` reads its length.
    pub(super) fn room_for_one_more(
        &self,
        actor: &Actor,
        what: &str,
        count: impl Fn(&super::RoomRules) -> usize,
        instead: &str,
    ) -> Result<(), String> {
        let held = self.moderation.rooms.get(&actor.room_key).map_or(0, count);
        if held < MAX_PER_ROOM {
            return Ok(());
        }
        Err(format!(
            "{} has {held} {what}, the most a room keeps: {instead}",
            actor.room_name
        ))
    }

    /// Someone here by nick, or the error that says they are not.
    pub(super) fn present(&self, nick: &str) -> Result<String, String> {
        let key = nick.to_ascii_lowercase();
        if self.people.contains_key(&key) {
            Ok(key)
        } else {
            Err(format!("no user named {nick} is connected"))
        }
    }

    /// The targets a ban or mute of `text` names, the typed one first: a
    /// nick who is here also by their key and by the address of each of
    /// their sessions (so that neither a new name, nor coming back as a
    /// guest without the certificate, gets round it), except an address
    /// the actor shares (behind one NAT, say).
    fn targets_of(&self, actor: &Actor, text: &str) -> Result<Vec<Target>, String> {
        let target = Target::parse(text)?;
        let mut targets = vec![target.clone()];
        if let Target::Nick(key) = &target {
            let actor_blocks = self
                .identifiers(&actor.key)
                .map(|who| who.blocks)
                .unwrap_or_default();
            if let Some(who) = self.identifiers(key) {
                targets.extend(who.key.map(Target::Key));
                let blocks = who.blocks.into_iter();
                let others = blocks.filter(|block| !actor_blocks.contains(block));
                targets.extend(others.map(Target::Address));
            }
        }
        Ok(targets)
    }

    /// Refuses a sanction that would name the actor, or a server operator
    /// when the actor is not one.
    fn check_targets(&self, actor: &Actor, targets: &[Target]) -> Result<(), String> {
        let names = |key: &str| {
            self.identifiers(key)
                .is_some_and(|who| targets.iter().any(|target| target.names(&who)))
        };
        if names(&actor.key) {
            return Err("that would name you yourself".to_owned());
        }
        if !actor.server_op {
            // Whether or not the operator is connected now.
            let by_key = targets.iter().find(|target| {
                matches!(target, Target::Key(key) if self.moderation.operators.contains(key))
            });
            if let Some(key) = by_key {
                return Err(format!("{key} is a server operator's key"));
            }
            let operator = self
                .people
                .keys()
                .find(|key| self.is_server_operator(key) && names(key));
            if let Some(key) = operator {
                return Err(format!("{} is a server operator", self.people[key].nick));
            }
        }
        Ok(())
    }

    fn sanction(&self, actor: &Actor, sentence: Sentence<'_>) -> Result<Sanction, String> {
        self.shared_reason_fits(sentence.reason)?;
        let targets = self.targets_of(actor, sentence.target)?;
        self.check_targets(actor, &targets)?;
        Ok(Sanction {
            targets,
            by: actor.nick.clone(),
            reason: sentence.reason.map(str::to_owned),
            until: sentence
                .duration
                .map(|duration| self.now().saturating_add(duration.as_secs())),
        })
    }

    fn op(&mut self, actor: &Actor, nick: &str, out: &mut Vec<Output>) -> Result<(), String> {
        let key = self.present(nick).map_err(|why| {
            if self.others.is_some() {
                format!(
                    "{nick} is not connected to this server: /op names someone here, whose \
                     certificate this server can read"
                )
            } else {
                why
            }
        })?;
        let person = &self.people[&key];
        let (name, fingerprint) = (person.nick.to_string(), person.certificate_key());
        if self.is_room_operator(&key, &actor.room_key) {
            return Err(format!(
                "{name} is already an operator of {}",
                actor.room_name
            ));
        }
        if let Some(fingerprint) = fingerprint {
            let count = |rules: &super::RoomRules| rules.ops.len();
            self.room_for_one_more(actor, "operators by key", count, "/deop some first")?;
            self.shared_rules_fit(actor, |rules| rules.ops.push(fingerprint))?;
        } else if self.guest_op_rooms(&key) >= GUEST_OP_ROOMS {
            return Err(format!(
                "{name} is an operator of {GUEST_OP_ROOMS} rooms already, the most a guest may be"
            ));
        }
        let rules = self
            .moderation
            .rooms
            .entry(actor.room_key.clone())
            .or_default();
        let how = match fingerprint {
            Some(fingerprint) => {
                rules.ops.push(fingerprint);
                "by certificate key"
            }
            None => {
                rules.guest_ops.push(key.clone());
                "while connected under that name"
            }
        };
        let text = format!(
            "{} made {name} an operator of {} ({how})",
            actor.nick, actor.room_name
        );
        self.announce(actor, &text, None, out);
        if fingerprint.is_some() {
            self.save_rules(&actor.room_key, out);
        }
        Ok(())
    }

    /// `/deop NICK`, or `/deop sha256:...` for an operator by key who is
    /// not connected.
    fn deop(&mut self, actor: &Actor, nick: &str, out: &mut Vec<Output>) -> Result<(), String> {
        let key = nick.to_ascii_lowercase();
        let fingerprint = match Target::parse(nick) {
            Ok(Target::Key(fingerprint)) => Some(fingerprint),
            _ => self.people.get(&key).and_then(Person::certificate_key),
        };
        let server_op = fingerprint.is_some_and(|key| self.moderation.operators.contains(&key));
        let Some(rules) = self.moderation.rooms.get_mut(&actor.room_key) else {
            return Err(format!("{nick} is not an operator of {}", actor.room_name));
        };
        let before = rules.ops.len() + rules.guest_ops.len();
        rules.guest_ops.retain(|op| *op != key);
        if let Some(fingerprint) = fingerprint {
            rules.ops.retain(|op| *op != fingerprint);
        }
        if before == rules.ops.len() + rules.guest_ops.len() {
            return Err(format!("{nick} is not an operator of {}", actor.room_name));
        }
        let still = if server_op {
            " (still a server operator)"
        } else {
            ""
        };
        let text = format!(
            "{} made {nick} no longer an operator of {}{still}",
            actor.nick, actor.room_name
        );
        self.announce(actor, &text, None, out);
        self.save_rules(&actor.room_key, out);
        Ok(())
    }

    fn kick(
        &mut self,
        actor: &Actor,
        nick: &str,
        reason: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        not_in_lobby(actor, "kicked")?;
        let key = match self.present(nick) {
            Ok(key) => key,
            Err(why) => {
                let deed = Deed::Kick(actor.room_name.clone());
                return self.act_elsewhere(actor, nick, deed, reason, why, out);
            }
        };
        if self.people[&key].room != actor.room {
            return Err(format!("{nick} is not in {}", actor.room_name));
        }
        self.check_targets(actor, &[Target::Nick(key.clone())])?;
        self.send_to_lobby(actor, &key, reason, out);
        Ok(())
    }

    fn ban(
        &mut self,
        actor: &Actor,
        sentence: Sentence<'_>,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        not_in_lobby(actor, "banned")?;
        let now = self.now();
        let count = |rules: &super::RoomRules| rules.bans.iter().filter(|b| b.live(now)).count();
        self.room_for_one_more(actor, "bans", count, "/unban some first")?;
        let ban = self.sanction(actor, sentence)?;
        self.shared_rules_fit(actor, |rules| rules.bans.push(ban.clone()))?;
        // The target as typed: the addresses and keys added to it are for
        // the operators' `/bans`, not for everyone in the room.
        let text = format!(
            "{} banned {} from {} ({})",
            actor.nick,
            sentence.target,
            actor.room_name,
            ban.left(now)
        );
        self.announce(actor, &text, sentence.reason, out);
        let why = match sentence.reason {
            Some(reason) => format!("banned: {reason}"),
            None => "banned".to_owned(),
        };
        for key in self.members_named(actor.room, &ban) {
            self.send_to_lobby(actor, &key, Some(&why), out);
        }
        let rules = self
            .moderation
            .rooms
            .entry(actor.room_key.clone())
            .or_default();
        rules.bans.push(ban);
        self.save_rules(&actor.room_key, out);
        Ok(())
    }

    fn mute(
        &mut self,
        actor: &Actor,
        sentence: Sentence<'_>,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        let now = self.now();
        let count = |rules: &super::RoomRules| rules.mutes.iter().filter(|m| m.live(now)).count();
        self.room_for_one_more(actor, "mutes", count, "/unmute some first")?;
        let mute = self.sanction(actor, sentence)?;
        self.shared_rules_fit(actor, |rules| rules.mutes.push(mute.clone()))?;
        let text = format!(
            "{} muted {} in {} ({})",
            actor.nick,
            sentence.target,
            actor.room_name,
            mute.left(now)
        );
        self.announce(actor, &text, sentence.reason, out);
        let rules = self
            .moderation
            .rooms
            .entry(actor.room_key.clone())
            .or_default();
        rules.mutes.push(mute);
        self.refresh_room_mutes(&actor.room_key);
        self.save_rules(&actor.room_key, out);
        Ok(())
    }

    /// `/unban` (`mutes` false) or `/unmute`: lifts every ban or mute of
    /// the room that names the target (and, for a nick who is here, them).
    fn lift(
        &mut self,
        actor: &Actor,
        text: &str,
        mutes: bool,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        let target = Target::parse(text)?;
        let who = match &target {
            Target::Nick(key) => self.identifiers(key),
            _ => None,
        };
        let kind = if mutes { "mute" } else { "ban" };
        let none = || format!("no {kind} in {} names {text}", actor.room_name);
        let rules = self
            .moderation
            .rooms
            .get_mut(&actor.room_key)
            .ok_or_else(none)?;
        let list = if mutes {
            &mut rules.mutes
        } else {
            &mut rules.bans
        };
        let before = list.len();
        list.retain(|sanction| {
            !sanction.targets.contains(&target) && !who.as_ref().is_some_and(|w| sanction.names(w))
        });
        if list.len() == before {
            return Err(none());
        }
        let done = if mutes {
            "unmuted"
        } else {
            "lifted the ban on"
        };
        let text = format!("{} {done} {text} in {}", actor.nick, actor.room_name);
        self.announce(actor, &text, None, out);
        self.refresh_room_mutes(&actor.room_key);
        self.save_rules(&actor.room_key, out);
        Ok(())
    }

    fn set_mode(&mut self, actor: &Actor, mode: Mode, out: &mut Vec<Output>) -> Result<(), String> {
        if matches!(mode, Mode::InviteOnly(true)) {
            not_in_lobby(actor, "made invite-only")?;
        }
        let rules = self
            .moderation
            .rooms
            .entry(actor.room_key.clone())
            .or_default();
        let (flag, on) = match mode {
            Mode::InviteOnly(on) => (&mut rules.invite_only, on),
            Mode::TopicLock(on) => (&mut rules.topic_locked, on),
        };
        let changed = *flag != on;
        *flag = on;
        if !changed {
            return Err(format!("nothing to change: {}", self.modes_text(actor)));
        }
        let room = &actor.room_name;
        let what = match mode {
            Mode::InviteOnly(true) => format!("made {room} invite-only"),
            Mode::InviteOnly(false) => format!("opened {room} to everyone"),
            Mode::TopicLock(true) => format!("locked the topic of {room}: only operators set it"),
            Mode::TopicLock(false) => format!("unlocked the topic of {room}"),
        };
        let text = format!("{} {what}", actor.nick);
        self.announce(actor, &text, None, out);
        self.save_rules(&actor.room_key, out);
        Ok(())
    }

    fn server_ban(
        &mut self,
        actor: &Actor,
        sentence: Sentence<'_>,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        let ban = self.sanction(actor, sentence)?;
        let now = self.now();
        let text = format!(
            "{} banned {} from the server ({})",
            actor.nick,
            sentence.target,
            ban.left(now)
        );
        self.announce(actor, &text, sentence.reason, out);
        let told = format!("you are banned from this server {}", ban.told(now));
        let public = format!("banned from the server by {}", actor.nick);
        let named: Vec<String> = self
            .people
            .keys()
            .filter(|key| self.identifiers(key).is_some_and(|who| ban.names(&who)))
            .cloned()
            .collect();
        for key in named {
            self.disconnect(&key, CloseReason::Banned, &told, &public, out);
        }
        self.moderation.server_bans.push(ban);
        self.save_server_bans(out);
        Ok(())
    }

    fn server_unban(
        &mut self,
        actor: &Actor,
        text: &str,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        let target = Target::parse(text)?;
        let bans = &mut self.moderation.server_bans;
        let before = bans.len();
        bans.retain(|ban| !ban.targets.contains(&target));
        if bans.len() == before {
            return Err(format!("no server ban names {text}"));
        }
        let text = format!("{} lifted the server ban on {text}", actor.nick);
        self.announce(actor, &text, None, out);
        self.save_server_bans(out);
        Ok(())
    }

    fn kill(
        &mut self,
        actor: &Actor,
        nick: &str,
        reason: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        let key = match self.present(nick) {
            Ok(key) => key,
            Err(why) => return self.act_elsewhere(actor, nick, Deed::Kill, reason, why, out),
        };
        if key == actor.key {
            return Err("to leave, /quit".to_owned());
        }
        let name = self.people[&key].nick.to_string();
        let mut public = format!("disconnected by {}", actor.nick);
        if let Some(reason) = reason {
            public.push_str(": ");
            public.push_str(reason);
        }
        log::info!(
            "{} disconnected {name}: {}",
            actor.nick,
            reason.unwrap_or("-")
        );
        let told = format!("you were {public}");
        let elsewhere = self.people[&key].room != actor.room;
        self.disconnect(&key, CloseReason::Killed, &told, &public, out);
        if elsewhere {
            let text = format!("you disconnected {name}");
            out.push(to(actor.id, ServerLine::Notice(&text)));
        }
        Ok(())
    }

    /// Closes every session of the person `key` for `why`, each told
    /// `told` first; their room hears they quit, and `public` why.
    pub(in crate::chat) fn disconnect(
        &mut self,
        key: &str,
        why: CloseReason,
        told: &str,
        public: &str,
        out: &mut Vec<Output>,
    ) {
        let Some(sessions) = self.people.get(key).map(|p| p.sessions.clone()) else {
            return;
        };
        for id in sessions {
            out.push(to(id, ServerLine::Error(told)));
            self.remove_session(id, why, Some(public), public, out);
        }
    }

    /// The members of `room` a sanction names.
    fn members_named(&self, room: RoomId, sanction: &Sanction) -> Vec<String> {
        let Some(state) = self.rooms.get(&room) else {
            return Vec::new();
        };
        state
            .members
            .iter()
            .filter(|key| {
                self.identifiers(key)
                    .is_some_and(|who| sanction.names(&who))
            })
            .cloned()
            .collect()
    }

    /// Sends the person `key` from the actor's room to the lobby; the
    /// room (them included) is told who did it and why.
    fn send_to_lobby(
        &mut self,
        actor: &Actor,
        key: &str,
        reason: Option<&str>,
        out: &mut Vec<Output>,
    ) {
        self.move_to_lobby(actor.room, &actor.nick, key, reason, out);
    }

    /// Tells the actor's room (the actor included) `what`, and why if a
    /// reason was given; the log too.
    pub(super) fn announce(
        &self,
        actor: &Actor,
        what: &str,
        reason: Option<&str>,
        out: &mut Vec<Output>,
    ) {
        let text = match reason {
            Some(reason) => format!("{what}: {reason}"),
            None => what.to_owned(),
        };
        log::info!("{} {}: {text}", actor.id, actor.room_name);
        out.push(to_room(
            actor.room,
            ServerLine::Notice(&text),
            None,
            Keep::Nothing,
        ));
    }

    fn modes_text(&self, actor: &Actor) -> String {
        let rules = self.moderation.rooms.get(&actor.room_key);
        let mut modes = Vec::new();
        if rules.is_some_and(|rules| rules.invite_only) {
            modes.push("invite-only (+i)");
        }
        if rules.is_some_and(|rules| rules.topic_locked) {
            modes.push("topic locked (+t)");
        }
        if modes.is_empty() {
            format!(
                "{} has no modes (+i invite-only, +t topic lock)",
                actor.room_name
            )
        } else {
            format!("modes of {}: {}", actor.room_name, modes.join(", "))
        }
    }

    /// `/bans`: the room's operators, bans, mutes and invitations (and
    /// the server's bans, to a server operator), a notice each. Keys and
    /// addresses are shown to the room's operators only: to anyone else,
    /// the names of those here.
    fn list_rules(&mut self, actor: &Actor, out: &mut Vec<Output>) {
        let now = self.now();
        if self
            .moderation
            .rooms
            .get_mut(&actor.room_key)
            .is_some_and(|rules| rules.drop_expired(now))
        {
            self.save_rules(&actor.room_key, out);
        }
        let room = &actor.room_name;
        let rules = self
            .moderation
            .rooms
            .get(&actor.room_key)
            .cloned()
            .unwrap_or_default();
        let operator = actor.server_op || self.is_room_operator(&actor.key, &actor.room_key);
        let holder = |fingerprint: &Fingerprint| {
            self.people
                .values()
                .find(|person| person.certificate_key() == Some(*fingerprint))
                .map(|person| person.nick.to_string())
        };
        // How a target is shown to the one asking, if at all.
        let shown = |target: &Target| match target {
            _ if operator => Some(target.to_string()),
            Target::Nick(nick) => Some(nick.clone()),
            Target::Key(fingerprint) => holder(fingerprint),
            Target::Address(_) => None,
        };
        let mut ops: Vec<String> = rules
            .ops
            .iter()
            .map(|fingerprint| match holder(fingerprint) {
                Some(nick) if operator => format!("{nick} ({fingerprint})"),
                Some(nick) => nick,
                None if operator => fingerprint.to_string(),
                None => "one not connected (by certificate)".to_owned(),
            })
            .collect();
        ops.extend(rules.guest_ops.iter().map(|nick| {
            let name = self
                .people
                .get(nick)
                .map_or(nick.clone(), |p| p.nick.to_string());
            format!("{name} (while connected)")
        }));
        let mut lines = vec![listed(&format!("operators of {room}"), ops)];
        let described = |sanctions: &[Sanction]| -> Vec<String> {
            sanctions
                .iter()
                .map(|sanction| {
                    let mut names: Vec<String> = Vec::new();
                    for name in sanction.targets.iter().filter_map(shown) {
                        // A nick and the key of the one here under it.
                        if !names.contains(&name) {
                            names.push(name);
                        }
                    }
                    let names = if names.is_empty() {
                        "someone (by address or key)".to_owned()
                    } else {
                        names.join(", ")
                    };
                    format!("{names} {}", sanction.told(now))
                })
                .collect()
        };
        lines.push(listed(&format!("bans in {room}"), described(&rules.bans)));
        lines.push(listed(&format!("mutes in {room}"), described(&rules.mutes)));
        let invited = rules.invited.iter().filter_map(shown).collect();
        lines.push(listed(&format!("invited to {room}"), invited));
        lines.push(self.modes_text(actor));
        if actor.server_op {
            let bans = &mut self.moderation.server_bans;
            bans.retain(|ban| ban.live(now));
            let bans = described(bans);
            lines.push(listed("bans on the server", bans));
        }
        for line in lines {
            out.push(to(actor.id, ServerLine::Notice(&line)));
        }
    }
}

/// `what: a; b`, or `what: none`.
fn listed(what: &str, items: Vec<String>) -> String {
    if items.is_empty() {
        format!("{what}: none")
    } else {
        format!("{what}: {}", items.join("; "))
    }
}

/// Nobody is sent away from the lobby, the room everyone comes back to:
/// a server operator can disconnect them instead.
pub(super) fn not_in_lobby(actor: &Actor, done: &str) -> Result<(), String> {
    if actor.room_name == protocol::LOBBY {
        return Err(format!(
            "nobody can be {done} in {}: server operators can /kill or /serverban",
            protocol::LOBBY
        ));
    }
    Ok(())
}

//! What each command does: `/nick`, `/msg`, `/topic`, `/token`,
//! `/reclaim` and the rest, once [`Chat::line`] has parsed it; and the
//! reclaim secrets. Not rooms' comings and goings (`rooms`).

use std::sync::Arc;

use super::others::is_guest_name;
use super::{
    reply, to, to_room, Chat, ClientId, CloseReason, Keep, Others, Output, RoomState,
    LINK_DOWN_MSG, LINK_DOWN_NICK, SECRET_BYTES,
};
use crate::elsewhere::{Ask, Query};
use crate::protocol::{
    self, Command, NameError, Nick, Notice, Refusal, ServerLine, COMMANDS, MODERATION_COMMANDS,
};

impl Chat {
    /// What a command does. A plain line (`Say`) usually comes straight
    /// from [`Chat::line`] to [`Chat::say`]; it is handled here too, so
    /// that any parsed command can be given to this.
    pub(super) fn command(&mut self, id: ClientId, command: Command<'_>, out: &mut Vec<Output>) {
        let Some(mut person) = self.person_of(id) else {
            return;
        };
        let room = person.room;
        // A muted person's actions are refused like their lines.
        if person.muted && matches!(command, Command::Me(_) | Command::Topic(Some(_))) {
            if self.still_muted(id, out) {
                return;
            }
            let Some(again) = self.person_of(id) else {
                return;
            };
            person = again;
        }
        match command {
            Command::Say(text) => self.say(id, text, out),
            Command::Moderate(moderation) => self.moderate(id, moderation, out),
            Command::Me(text) => {
                let from = person.nick.as_str();
                out.push(to_room(
                    room,
                    ServerLine::Action { from, text },
                    None,
                    Keep::History,
                ));
                self.note_speaker(id, out);
            }
            Command::Nick(name) => self.change_nick(id, name, out),
            Command::Join(name) => self.join_room(id, name, out),
            // Shared, every server answers for its own users.
            Command::Rooms(page) if self.reachable() => out.push(Output::Elsewhere(Ask::Query {
                id,
                query: Query::Rooms,
                page: page.map(str::to_owned),
            })),
            Command::Rooms(page) => {
                let text = self.rooms_page(page);
                out.push(reply(id, self.only_here(text)));
            }
            Command::Who(page) if self.reachable() => out.push(Output::Elsewhere(Ask::Query {
                id,
                query: self.who_question(room, page),
                page: page.map(str::to_owned),
            })),
            Command::Who(page) => {
                let text = self.who_page(room, page);
                out.push(reply(id, self.only_here(text)));
            }
            Command::Whois(name) => {
                let key = name.to_ascii_lowercase();
                let text = match self.people.get(&key) {
                    Some(other) => Ok(self.whois_text(other)),
                    None if self.reachable() && Nick::parse(name).is_ok() => {
                        return out.push(Output::Elsewhere(Ask::Query {
                            id,
                            query: Query::Whois(key),
                            page: None,
                        }));
                    }
                    None => self.only_here(Err(format!("no user named {name} is connected"))),
                };
                out.push(reply(id, text));
            }
            Command::Msg { to: name, text } => match self.people.get(&name.to_ascii_lowercase()) {
                Some(recipient) => {
                    let line: Arc<str> = ServerLine::Private {
                        from: person.nick.as_str(),
                        to: recipient.nick.as_str(),
                        text,
                    }
                    .to_wire()
                    .into();
                    // Every session of both: what one sends appears in
                    // the others.
                    let mut ids = person.sessions.clone();
                    if recipient.nick != person.nick {
                        ids.extend(&recipient.sessions);
                    }
                    for id in ids {
                        let line = Arc::clone(&line);
                        out.push(Output::To { id, line });
                    }
                }
                // Perhaps on another server: the others know.
                None if self.others.is_some() && Nick::parse(name).is_ok() => {
                    if !self.reachable() {
                        return out.push(to(id, ServerLine::Error(LINK_DOWN_MSG)));
                    }
                    let line = ServerLine::Private {
                        from: person.nick.as_str(),
                        to: name,
                        text,
                    }
                    .to_wire()
                    .into();
                    out.push(Output::Elsewhere(Ask::Private {
                        from: id,
                        to: name.to_ascii_lowercase(),
                        line,
                    }));
                }
                None => {
                    let text = format!("no user named {name} is connected");
                    out.push(to(id, ServerLine::Error(&text)));
                }
            },
            Command::Topic(None) => {
                let text = match self.rooms.get(&room) {
                    Some(RoomState {
                        name,
                        topic: Some(topic),
                        ..
                    }) => format!("topic of {name}: {topic}"),
                    _ => format!(
                        "{} has no topic; set one with /topic TEXT",
                        self.room_name(room)
                    ),
                };
                out.push(to(id, ServerLine::Notice(&text)));
            }
            Command::Topic(Some(topic)) => {
                let nick = person.nick.to_string();
                if let Some(why) = self.topic_refusal(&person.nick.key(), room) {
                    return out.push(to(id, ServerLine::Error(&why)));
                }
                // Kept when shown ([`Chat::heard`]).
                let Some(state) = self.rooms.get(&room) else {
                    return;
                };
                let text = format!("{nick} set the topic of {}: {topic}", state.name);
                let keep = Keep::Topic(topic.into());
                out.push(to_room(room, ServerLine::Notice(&text), None, keep));
            }
            Command::Help(None) => {
                let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
                let text = format!("commands: {}", names.join(" "));
                out.push(to(id, ServerLine::Notice(&text)));
                for info in COMMANDS {
                    let text = format!("{}: {}", info.usage, info.help);
                    out.push(to(id, ServerLine::Notice(&text)));
                }
                let text = "anything else you type is said to the room; \
                            start it with // to say a line that begins with /; \
                            /help moderation lists what operators may do";
                out.push(to(id, ServerLine::Notice(text)));
            }
            Command::Help(Some("moderation")) => {
                let names: Vec<&str> = MODERATION_COMMANDS.iter().map(|c| c.name).collect();
                let text = format!("moderation: {}", names.join(" "));
                out.push(to(id, ServerLine::Notice(&text)));
                let text = "whoever makes a room (enters it empty, never #lobby) is its \
                            operator: by certificate key, which lasts, or, as a guest, only \
                            while connected under that name; server operators, named by key \
                            in the server's --operators file, may do everything everywhere";
                out.push(to(id, ServerLine::Notice(text)));
                for info in MODERATION_COMMANDS {
                    let text = format!("{}: {}", info.usage, info.help);
                    out.push(to(id, ServerLine::Notice(&text)));
                }
            }
            Command::Help(Some(name)) => {
                let text = match protocol::command_info(name) {
                    Some(info) => Ok(format!("{}: {}", info.usage, info.help)),
                    None => Err(format!("no command {name}: /help lists the commands")),
                };
                out.push(reply(id, text));
            }
            Command::Quit(reason) => {
                out.push(to(id, ServerLine::Notice(protocol::BYE_REPLY)));
                let public = reason.map(str::to_string);
                let why = CloseReason::Quit;
                self.remove_session(id, why, public.as_deref(), "said goodbye", out);
            }
            Command::Token => {
                if person.certificate.is_some() {
                    let text = "your certificate is who you are: no secret is needed to \
                                come back, just connect again";
                    return out.push(to(id, ServerLine::Error(text)));
                }
                let key = person.nick.key();
                if let Some(session) = self.sessions.get_mut(&id) {
                    session.wants_token = true;
                }
                self.give_secret(id, &key, out);
            }
            Command::Reclaim { nick, secret } => self.reclaim(id, nick, secret, out),
        }
    }

    /// A new secret for `key`'s nick, for session `id`: the last one given
    /// stops working.
    pub(super) fn give_secret(&mut self, id: ClientId, key: &str, out: &mut Vec<Output>) {
        let Some(person) = self.people.get_mut(key) else {
            return;
        };
        let mut secret = [0u8; SECRET_BYTES];
        if fill_random(&mut secret).is_err() {
            // Without randomness no secret is safe to give: say so rather
            // than hand out a guessable one.
            let text = "no secret can be made right now; try /token again later";
            return out.push(to(id, ServerLine::Error(text)));
        }
        person.secret = Some(secret);
        let text = hex(&secret);
        let nick = person.nick.as_str();
        out.push(to(
            id,
            ServerLine::Token {
                nick,
                secret: &text,
            },
        ));
    }

    /// `/reclaim NICK SECRET`: the session takes NICK (and its room) back
    /// from the sessions that hold it, which are closed without a word to
    /// the room: for everyone else, NICK never left.
    pub(super) fn reclaim(
        &mut self,
        id: ClientId,
        nick: &str,
        secret: &str,
        out: &mut Vec<Output>,
    ) {
        let key = nick.to_ascii_lowercase();
        let Some(current) = self.sessions.get(&id).map(|s| s.person.clone()) else {
            return;
        };
        if current == key {
            let text = Notice::YouAreAlready { nick }.to_string();
            return out.push(to(id, ServerLine::Notice(&text)));
        }
        let matches = self.people.get(&key).is_some_and(|holder| {
            holder.certificate.is_none()
                && holder
                    .secret
                    .is_some_and(|wanted| same_secret(&wanted, secret))
        });
        if !matches {
            // The same answer whether the nick is free, held without a
            // secret, or the secret is wrong: it tells a guesser nothing.
            let text = Refusal::CannotReclaim { nick }.to_string();
            return out.push(to(id, ServerLine::Error(&text)));
        }
        let Some(holder) = self.people.get_mut(&key) else {
            return;
        };
        // The secret works once.
        holder.secret = None;
        let ghosts = std::mem::replace(&mut holder.sessions, vec![id]);
        let (room, name) = (holder.room, holder.nick.clone());
        for ghost in ghosts {
            self.sessions.remove(&ghost);
            log::info!("{ghost}: replaced by {id}, which reclaimed {name}");
            out.push(Output::Close {
                id: ghost,
                why: CloseReason::Replaced,
            });
        }
        // The session's own name of a moment ago goes as if it had moved
        // away, told once the session is in its new room.
        if self.others.is_some() {
            out.push(Output::Elsewhere(Ask::Release {
                name: current.clone(),
            }));
        }
        let left = self.people.remove(&current).map(|guest| {
            let notice = Notice::Left {
                nick: guest.nick.as_str(),
                room: self.room_name(guest.room),
            }
            .to_string();
            self.leave_room(&current, guest.room);
            (guest.room, notice)
        });
        self.forget_guest_ops(&current, out);
        if let Some(session) = self.sessions.get_mut(&id) {
            session.person = key.clone();
            session.wants_token = true;
        }
        log::info!("{id}: reclaimed {name}");
        let text = Notice::YouAreBack {
            nick: name.as_str(),
        }
        .to_string();
        out.push(to(id, ServerLine::Notice(&text)));
        self.show_room(id, room, out);
        if let Some((old_room, notice)) = left {
            // The session may be in that very room, as its new self.
            self.tell_leaving(old_room, &notice, Some(id), out);
        }
        self.give_secret(id, &key, out);
    }

    pub(super) fn change_nick(&mut self, id: ClientId, name: &str, out: &mut Vec<Output>) {
        let Some(person) = self.person_of(id) else {
            return;
        };
        let new = match Nick::parse(name) {
            Ok(new) => new,
            Err(why) => return out.push(invalid(id, name, "nick", why, "")),
        };
        let old = &person.nick;
        if new == *old {
            let text = Notice::YouAreAlready { nick: new.as_str() }.to_string();
            return out.push(to(id, ServerLine::Notice(&text)));
        }
        if person.certificate.is_some() {
            let text =
                format!("your nick is {old}, the name in your certificate; it cannot be changed");
            return out.push(to(id, ServerLine::Error(&text)));
        }
        let (old_key, new_key) = (old.key(), new.key());
        // Changing only the case of one's own nick is allowed.
        let other = old_key != new_key;
        let claimed = |others: &Others| others.claims.contains_key(&new_key);
        if other
            && (self.people.contains_key(&new_key) || self.others.as_ref().is_some_and(claimed))
        {
            let text = format!("nick {new} is taken; choose another");
            return out.push(to(id, ServerLine::Error(&text)));
        }
        let reachable = self.reachable();
        if let (Some(others), true) = (&mut self.others, other) {
            // Guests' names are the servers' to give: one taken here could
            // be given to a newcomer on another server.
            if is_guest_name(&new_key) {
                let text = format!(
                    "{new} is a guest name, and the servers give those out; choose another"
                );
                return out.push(to(id, ServerLine::Error(&text)));
            }
            if others.claims.values().any(|(asker, ..)| *asker == id) {
                let text = "wait: the other servers have not yet answered your last /nick";
                return out.push(to(id, ServerLine::Error(text)));
            }
            if !reachable {
                return out.push(to(id, ServerLine::Error(LINK_DOWN_NICK)));
            }
            others.claims.insert(new_key.clone(), (id, new, old_key));
            return out.push(Output::Elsewhere(Ask::Claim { name: new_key }));
        }
        self.rename(id, new, out);
    }

    /// A certificate whose name is `key` has come, and a guest goes by
    /// that name: the guest becomes `guestN`, and is told why. Were it the
    /// other way round, a guest could keep anyone with a certificate out,
    /// a server operator too, by taking their name first.
    pub(super) fn rename_guest_holding(&mut self, key: &str, out: &mut Vec<Output>) {
        let Some(guest) = self.people.get(key).filter(|p| p.certificate.is_none()) else {
            return;
        };
        let Some(&id) = guest.sessions.first() else {
            return;
        };
        let old = guest.nick.to_string();
        log::info!("{id}: {old} gives the name to its certificate's holder");
        let why = |new: &Nick| {
            format!(
                "{old} is the name in the certificate of someone who just connected, \
                 and a certificate's name is its holder's: you are {new} now"
            )
        };
        self.rename_to_guest(key, why, out);
        if self.others.is_some() {
            out.push(Output::Elsewhere(Ask::Release {
                name: key.to_owned(),
            }));
        }
    }

    /// The person `key`, who has no certificate, gives up their name: each
    /// of their sessions is told why (`why` of the name they get), then
    /// they take a free guest name, held with the other servers first if
    /// there are any. Letting the old name go is the caller's, if it is
    /// still this server's.
    pub(super) fn rename_to_guest(
        &mut self,
        key: &str,
        why: impl FnOnce(&Nick) -> String,
        out: &mut Vec<Output>,
    ) {
        let Some(person) = self.people.get(key) else {
            return;
        };
        let Some(&first) = person.sessions.first() else {
            return;
        };
        // Never `key` itself: they hold it until the rename.
        let guest = self.free_guest_nick(first);
        let text = why(&guest);
        for &id in &person.sessions {
            out.push(to(id, ServerLine::Error(&text)));
        }
        if self.others.is_some() {
            out.push(Output::Elsewhere(Ask::Hold { name: guest.key() }));
        }
        self.rename(first, guest, out);
    }

    /// Session `id`'s person is called `new` from now on; it and its room
    /// are told.
    pub(super) fn rename(&mut self, id: ClientId, new: Nick, out: &mut Vec<Output>) {
        let Some(person) = self.person_of(id) else {
            return;
        };
        let (old_key, new_key) = (person.nick.key(), new.key());
        let old = &person.nick;
        let room = person.room;
        log::info!("{id}: {old} is now {new}");
        let notice = Notice::Renamed {
            old: old.as_str(),
            new: new.as_str(),
        }
        .to_string();
        let Some(mut person) = self.people.remove(&old_key) else {
            return;
        };
        // A secret is for one name: the old one's dies with it.
        person.secret = None;
        person.nick = new.clone();
        for session in &person.sessions {
            if let Some(session) = self.sessions.get_mut(session) {
                session.person = new_key.clone();
            }
        }
        self.people.insert(new_key.clone(), person);
        if let Some(state) = self.rooms.get_mut(&room) {
            state.members.remove(&old_key);
            state.members.insert(new_key.clone());
        }
        // An operator by nick is one only under that nick; a mute by nick
        // stays with the nick.
        if old_key != new_key {
            self.forget_guest_ops(&old_key, out);
        }
        self.refresh_muted(&new_key);
        let text = Notice::YouAreNow { nick: new.as_str() }.to_string();
        out.push(to(id, ServerLine::Notice(&text)));
        out.push(to_room(
            room,
            ServerLine::Notice(&notice),
            Some(id),
            Keep::Nothing,
        ));
        if self.sessions.get(&id).is_some_and(|s| s.wants_token) {
            self.give_secret(id, &new_key, out);
        }
    }
}

/// Fills `buf` from the operating system's secure random source, through
/// the same cryptography library rustls uses.
pub(super) fn fill_random(buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(buf)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares a secret with what a client typed, in time that depends only
/// on the length, never on where they first differ: a client timing the
/// answers learns nothing of the secret.
pub(super) fn same_secret(secret: &[u8; SECRET_BYTES], typed: &str) -> bool {
    let wanted = hex(secret);
    let (wanted, typed) = (wanted.as_bytes(), typed.as_bytes());
    if wanted.len() != typed.len() {
        return false;
    }
    wanted
        .iter()
        .zip(typed)
        .fold(0u8, |differ, (a, b)| differ | (a ^ b))
        == 0
}

/// The error for a nick or room name that breaks the rules, and the rules.
pub(super) fn invalid(
    id: ClientId,
    name: &str,
    what: &str,
    why: NameError,
    prefix: &str,
) -> Output {
    let text = format!(
        "{name:?} is not a valid {what} ({why}): use {prefix}1 to 24 letters, digits, \
         _ or -, starting with a letter or _"
    );
    to(id, ServerLine::Error(&text))
}

//! What the chat does when it is shared with other servers: names
//! claimed and held everywhere, questions every server answers, private
//! lines to people elsewhere, and what the others tell it ([`Told`]).
//! Not how they are reached: that is the hub's [`Elsewhere`](crate::elsewhere::Elsewhere).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::rooms::{page_of, remember, show_past};
use super::{
    reply, to, to_room, Chat, ChatSettings, ClientId, CloseReason, Keep, Others, Output, RoomId,
    LINK_DOWN_MSG, LINK_DOWN_NICK, ROOMS_PAGE, WHO_PAGE,
};
use crate::elsewhere::{
    Ask, Claim, Query, Reach, RoomLine, Sent, Told, Unasked, WhoPart, MOST_NAMES_ASKED,
};
use crate::protocol::{Notice, Page, RoomList, ServerLine, WhoList};

impl Chat {
    /// An empty chat, shared with other servers: a room's history and
    /// topic change only when its lines come back from them
    /// ([`Chat::heard`]), and a room's past is what they tell
    /// ([`Told::Recent`]). Nicks are one person's on every server: each
    /// is claimed from the others before anyone here takes it
    /// ([`Ask::Claim`]), and guests are named `guest_prefix` and a number,
    /// a prefix no other server gives.
    pub fn shared(settings: ChatSettings, guest_prefix: String) -> Chat {
        Chat {
            guest_prefix,
            others: Some(Others {
                reachable: true,
                claims: HashMap::new(),
            }),
            ..Chat::new(settings)
        }
    }

    /// Whether the other servers can be reached (always false alone): then
    /// questions about who is where go to every server.
    pub(super) fn reachable(&self) -> bool {
        self.others.as_ref().is_some_and(|others| others.reachable)
    }

    /// Shared but cut off from the others, an answer about this server's
    /// users says it is only that.
    pub(super) fn only_here(&self, text: Result<String, String>) -> Result<String, String> {
        let mark = |text: String| {
            if self.others.is_some() && !self.reachable() {
                format!("{text} (this server only: the link to the others is down)")
            } else {
                text
            }
        };
        text.map(mark).map_err(mark)
    }

    /// What the other servers told: the chat does what it calls for, and
    /// gives back the room lines the hub is to show here after `out`.
    /// (A [`Told::Question`] is the hub's to answer, and the hub shows a
    /// [`Told::Lines`] itself, without coming here: given them, the chat
    /// only hands them back.)
    pub fn told(&mut self, told: Told, out: &mut Vec<Output>) -> Vec<RoomLine> {
        match told {
            Told::Nothing | Told::Question { .. } => Vec::new(),
            Told::Lines(lines) => lines,
            Told::Recent {
                room,
                lines,
                topic,
                rules,
                fresh,
                waiting,
            } => {
                // The rules first: whoever they keep out is not shown the
                // past, and lines said against them go nowhere.
                self.recent_rules(room, rules.as_ref().map(Option::as_deref), fresh, out);
                self.recent(room, lines, topic, out);
                self.let_through(waiting, out);
                self.forget_speakers(room);
                Vec::new()
            }
            Told::Rules { room, rules } => {
                self.rules_arrived(&room, rules.as_deref(), out);
                Vec::new()
            }
            Told::ServerBans(bans) => {
                self.server_bans_arrived(bans.as_deref(), out);
                Vec::new()
            }
            Told::TellRoom(room, text) => {
                self.tell_room(room, &text, out);
                Vec::new()
            }
            Told::Reachable {
                notice,
                guest_prefix,
            } => {
                if let Some(others) = &mut self.others {
                    others.reachable = true;
                }
                if let Some(prefix) = guest_prefix {
                    self.guest_prefix = prefix;
                }
                self.tell_everyone(notice, out);
                Vec::new()
            }
            Told::Unreachable { notice, lines } => {
                if let Some(others) = &mut self.others {
                    others.reachable = false;
                }
                self.forget_makers();
                self.tell_everyone(notice, out);
                lines
            }
            Told::Claimed(name, claim) => {
                self.claimed(&name, claim, out);
                Vec::new()
            }
            Told::NameLost(name, lapsed) => {
                self.name_lost(&name, lapsed, out);
                Vec::new()
            }
            Told::ActIn(to, act) => {
                self.act_in(&to, act, out);
                Vec::new()
            }
            Told::ActSent {
                from,
                to,
                act,
                sent,
            } => {
                self.act_sent(from, &to, &act, sent, out);
                Vec::new()
            }
            Told::PrivateIn(to, line) => {
                self.private_in(&to, &line, out);
                Vec::new()
            }
            Told::PrivateSent {
                from,
                to,
                line,
                sent,
            } => {
                self.private_sent(from, &to, &line, sent, out);
                Vec::new()
            }
            Told::Answered {
                id,
                query,
                page,
                parts,
                reach,
            } => {
                self.answered(id, &query, page.as_deref(), &parts, reach, out);
                Vec::new()
            }
            Told::AnswerHere { id, query, page } => {
                self.answer_here(id, &query, page.as_deref(), out);
                Vec::new()
            }
        }
    }

    /// What the chat asked could not go to the others (`why`): it answers
    /// itself. (Holds and releases never come back.)
    pub fn unasked(&mut self, ask: Ask, why: Unasked, out: &mut Vec<Output>) {
        match ask {
            Ask::Claim { name } => {
                let claim = match why {
                    Unasked::Busy => Claim::Busy,
                    Unasked::Unreachable => Claim::Down,
                };
                self.claimed(&name, claim, out);
            }
            Ask::Query { id, query, page } => self.answer_here(id, &query, page.as_deref(), out),
            Ask::Private { from, to, line } => self.private_sent(from, &to, &line, Sent::Down, out),
            Ask::Act { from, to, act } => self.act_sent(from, &to, &act, Sent::Down, out),
            Ask::Hold { .. } | Ask::Release { .. } | Ask::Rules { .. } => {}
        }
    }

    /// The others' verdict on an [`Ask::Claim`] of `name`.
    pub(super) fn claimed(&mut self, name: &str, claim: Claim, out: &mut Vec<Output>) {
        let Some((id, nick, from)) = self.others.as_mut().and_then(|o| o.claims.remove(name))
        else {
            return;
        };
        // Gone, or renamed meanwhile (`/reclaim`, a lapsed name): it no
        // longer wants this one.
        let asker = self
            .person_of(id)
            .map(|person| person.nick.key())
            .filter(|key| *key == from);
        // Someone here took it meanwhile (a certificate's name, say): it
        // stays theirs.
        let theirs = self.people.contains_key(name);
        match (claim, asker) {
            (Claim::Ours, Some(_)) if theirs => {
                let text = format!("nick {nick} is taken; choose another");
                out.push(to(id, ServerLine::Error(&text)));
            }
            (Claim::Ours, None) if theirs => {}
            // Still here and still wanting it: the name changes now.
            (Claim::Ours, Some(old)) => {
                self.rename(id, nick, out);
                out.push(Output::Elsewhere(Ask::Release { name: old }));
            }
            (Claim::Ours, None) => out.push(Output::Elsewhere(Ask::Release {
                name: name.to_owned(),
            })),
            (Claim::Taken, Some(_)) => {
                let text = format!("nick {nick} is taken on another server; choose another");
                out.push(to(id, ServerLine::Error(&text)));
            }
            (Claim::Down, Some(_)) => out.push(to(id, ServerLine::Error(LINK_DOWN_NICK))),
            (Claim::Busy, Some(_)) => {
                let text = "the other servers are busy; try /nick again in a moment";
                out.push(to(id, ServerLine::Error(text)));
            }
            (Claim::Taken | Claim::Down | Claim::Busy, None) => {}
        }
    }

    /// `name`, held by someone here, is someone else's on another
    /// server: it lapsed while the others could not be reached (`lapsed`), or was theirs
    /// already when this one arrived with it (a certificate's name, say).
    /// A guest or a chosen nick becomes a new guest name; a certificate's
    /// name cannot change, so its sessions are closed.
    pub(super) fn name_lost(&mut self, name: &str, lapsed: bool, out: &mut Vec<Output>) {
        let Some(person) = self.people.get(name) else {
            return;
        };
        let text = if lapsed {
            format!(
                "your nick {} lapsed while this server could not reach the others, and \
                 someone there has it now",
                person.nick
            )
        } else {
            format!("{} is connected on another server", person.nick)
        };
        if person.certificate.is_none() {
            return self.rename_to_guest(name, |_| text, out);
        }
        for &id in &person.sessions {
            out.push(to(id, ServerLine::Error(&text)));
        }
        let notice = Notice::Quit {
            nick: person.nick.as_str(),
            reason: None,
        }
        .to_string();
        for &id in &person.sessions {
            self.sessions.remove(&id);
            out.push(Output::Close {
                id,
                why: CloseReason::NameLost,
            });
        }
        self.remove_person_quietly(name, &notice, out);
    }

    /// The `/who` question for `room` and the page asked for: each server
    /// is asked for as many names as come before that page's end, and
    /// only for how many are in the room if the page is not a number, or
    /// lies past [`MOST_NAMES_ASKED`] (then the answer says what can be
    /// asked for).
    pub(super) fn who_question(&self, room: RoomId, page: Option<&str>) -> Query {
        let names = match page {
            None => WHO_PAGE,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .and_then(|page| page.checked_mul(WHO_PAGE))
                .filter(|&names| names <= MOST_NAMES_ASKED)
                .unwrap_or(0),
        };
        Query::Who {
            room: self.room_name(room).to_owned(),
            names,
        }
    }

    /// This server's part of the answer to `query`: how many are in the
    /// room and the first names asked for, in the room's order
    /// ([`WhoPart`]); the rooms and their counts, `NAME COUNT` pairs; or
    /// the `/whois` answer, empty if the nick is not here.
    pub fn local_answer(&self, query: &Query) -> String {
        match query {
            Query::Who { room, names } => {
                let Some(state) = self.room_named(room).and_then(|room| self.rooms.get(&room))
                else {
                    return WhoPart::default().encode();
                };
                // The members are kept by key: their first names are the
                // room's first.
                WhoPart {
                    count: state.members.len(),
                    names: state
                        .members
                        .iter()
                        .take(*names)
                        .filter_map(|key| self.people.get(key).map(|p| p.nick.as_str()))
                        .collect(),
                }
                .encode()
            }
            // Every room here: the rooms of a page cannot be cut per
            // server as names can, since the count of rooms counts each
            // room once however many servers have people in it.
            Query::Rooms => {
                let rooms: Vec<String> = self
                    .room_names
                    .values()
                    .filter_map(|room| self.rooms.get(room))
                    .filter(|state| !state.members.is_empty())
                    .map(|state| format!("{} {}", state.name, state.members.len()))
                    .collect();
                rooms.join(" ")
            }
            Query::Whois(name) => self
                .people
                .get(name)
                .map(|person| self.whois_text(person))
                .unwrap_or_default(),
        }
    }

    /// Every server's part of the answer to what `id` asked, and
    /// how far the question went.
    pub(super) fn answered(
        &self,
        id: ClientId,
        query: &Query,
        page: Option<&str>,
        parts: &[String],
        reach: Reach,
        out: &mut Vec<Output>,
    ) {
        if !self.sessions.contains_key(&id) {
            return;
        }
        let text = match query {
            Query::Who { room, names: asked } => {
                // A part left out (too long, or nonsense) is empty, and
                // reads as nothing.
                let parts: Vec<WhoPart> = parts
                    .iter()
                    .filter_map(|part| WhoPart::decode(part, *asked))
                    .collect();
                let count = parts
                    .iter()
                    .fold(0, |count: usize, part| count.saturating_add(part.count));
                // Each part is in the room's order already: the sort merges
                // sorted runs, and compares without copying a name.
                let mut nicks: Vec<&str> = parts.into_iter().flat_map(|part| part.names).collect();
                nicks.sort_by(|a, b| WhoPart::order(a, b));
                // A nick is one server's, but for a moment two may both
                // count a ghost being reclaimed: counted once, as shown.
                let named = nicks.len();
                nicks.dedup();
                let count = count.saturating_sub(named - nicks.len());
                page_of("/who", page, count, WHO_PAGE).and_then(|(page, first)| {
                    if first.saturating_add(WHO_PAGE).min(count) > *asked {
                        return Err(format!(
                            "/who shows the first {} pages of a room on several servers",
                            MOST_NAMES_ASKED / WHO_PAGE
                        ));
                    }
                    let names = nicks.iter().skip(first).take(WHO_PAGE).copied().collect();
                    Ok(Notice::Who(WhoList {
                        room,
                        count,
                        page: Page::of(page, count, WHO_PAGE),
                        names,
                        remark: None,
                    })
                    .to_string())
                })
            }
            Query::Rooms => {
                let mut rooms: BTreeMap<String, (&str, usize)> = BTreeMap::new();
                for part in parts {
                    let mut words = part.split(' ');
                    while let (Some(name), Some(count)) = (words.next(), words.next()) {
                        let count: usize = count.parse().unwrap_or(0);
                        let entry = rooms.entry(name.to_ascii_lowercase()).or_insert((name, 0));
                        entry.1 += count;
                    }
                }
                let count = rooms.len();
                page_of("/rooms", page, count, ROOMS_PAGE).map(|(page, first)| {
                    let shown = rooms.values().skip(first).take(ROOMS_PAGE).copied();
                    Notice::Rooms(RoomList {
                        page: Page::of(page, count, ROOMS_PAGE),
                        rooms: shown.collect(),
                        remark: None,
                    })
                    .to_string()
                })
            }
            Query::Whois(name) => parts
                .iter()
                .find(|part| !part.is_empty())
                .cloned()
                .ok_or_else(|| format!("no user named {name} is connected")),
        };
        let text = match (text, reach) {
            (Ok(text), Reach::Partial) => Ok(format!("{text} (not every server answered in time)")),
            (Ok(text), Reach::Cut) => Ok(format!(
                "{text} (not every server's part fits in one answer)"
            )),
            (Ok(text), Reach::HereOnly) => Ok(format!(
                "{text} (this server only: the others could not be asked)"
            )),
            (other, _) => other,
        };
        out.push(reply(id, text));
    }

    /// What `id` asked could not be asked of the other servers: this
    /// server answers alone, and says so.
    pub(super) fn answer_here(
        &self,
        id: ClientId,
        query: &Query,
        page: Option<&str>,
        out: &mut Vec<Output>,
    ) {
        let here = [self.local_answer(query)];
        self.answered(id, query, page, &here, Reach::HereOnly, out);
    }

    /// A private line for `to`, who is here, from another server.
    pub(super) fn private_in(&self, to: &str, line: &Arc<str>, out: &mut Vec<Output>) {
        if let Some(person) = self.people.get(to) {
            for &id in &person.sessions {
                let line = Arc::clone(line);
                out.push(Output::To { id, line });
            }
        }
    }

    /// What became of a private line `from` sent to `to` on
    /// another server. Delivered, it shows in every session of the
    /// sender; otherwise the sender is told why not.
    pub(super) fn private_sent(
        &self,
        from: ClientId,
        to: &str,
        line: &Arc<str>,
        sent: Sent,
        out: &mut Vec<Output>,
    ) {
        let Some(person) = self.person_of(from) else {
            return;
        };
        match sent {
            Sent::Delivered => self.private_in(&person.nick.key(), line, out),
            Sent::NoOne => {
                let text = format!("no user named {to} is connected");
                out.push(self::to(from, ServerLine::Error(&text)));
            }
            Sent::Down => out.push(self::to(from, ServerLine::Error(LINK_DOWN_MSG))),
        }
    }

    /// What `room` had said before this server joined it, as the others
    /// keep it: its last chat and action lines (oldest first) and its topic.
    /// Everyone in the room now entered before it was known, so each of
    /// their sessions is shown it.
    pub(super) fn recent(
        &mut self,
        room: RoomId,
        lines: impl IntoIterator<Item = Arc<str>>,
        topic: Option<String>,
        out: &mut Vec<Output>,
    ) {
        let max = self.settings.history;
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        self.history_total -= state.history.bytes();
        state.history.clear();
        for line in lines {
            remember(&mut state.history, max, &line);
        }
        self.history_total += state.history.bytes();
        state.topic = topic;
        state.known = true;
        self.keep_history_under_cap();
        let state = &self.rooms[&room];
        for key in &state.members {
            let Some(person) = self.people.get(key) else {
                continue;
            };
            for &id in &person.sessions {
                show_past(id, state, out);
            }
        }
    }

    /// A notice for every session here (that the other servers cannot be
    /// reached, say).
    pub(super) fn tell_everyone(&self, text: &str, out: &mut Vec<Output>) {
        let line: Arc<str> = ServerLine::Notice(text).to_wire().into();
        for &id in self.sessions.keys() {
            out.push(Output::To {
                id,
                line: Arc::clone(&line),
            });
        }
    }

    /// A notice for everyone in `room`.
    pub(super) fn tell_room(&self, room: RoomId, text: &str, out: &mut Vec<Output>) {
        if self.rooms.contains_key(&room) {
            out.push(to_room(room, ServerLine::Notice(text), None, Keep::Nothing));
        }
    }
}

/// Whether `key` is one of the names shared servers give their guests,
/// `guestS-N`.
pub(super) fn is_guest_name(key: &str) -> bool {
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    key.strip_prefix("guest")
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(server, number)| digits(server) && digits(number))
}

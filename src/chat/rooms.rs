//! Rooms: entering, leaving and who is told; what a room keeps and
//! shows a newcomer; `/who` and `/rooms` a page at a time. Not what
//! commands mean (`commands`).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::commands::invalid;
use super::saved::kept_when_empty;
use super::{to, to_room, Chat, ClientId, Keep, Output, RoomId, RoomState, ROOMS_PAGE, WHO_PAGE};
use crate::protocol::{self, Notice, Page, Room, RoomList, ServerLine, WhoList};
use crate::seats::Block;

impl Chat {
    /// The room called `name` (in any case), if anyone here is in it.
    pub fn room_named(&self, name: &str) -> Option<RoomId> {
        self.room_names.get(&name.to_ascii_lowercase()).copied()
    }

    /// What every server calls a room: its name, in lower case.
    pub fn room_key(&self, room: RoomId) -> Option<String> {
        self.rooms.get(&room).map(|state| state.name.key())
    }

    /// A line of `room` is shown here: the room keeps what `keep` says.
    /// Alone, that is as soon as it is said; shared, when it comes back
    /// from the other servers, in the order they give.
    pub fn heard(&mut self, room: RoomId, line: &Arc<str>, keep: &Keep) {
        let max = self.settings.history;
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        match keep {
            Keep::Nothing => {}
            Keep::History => {
                self.history_total -= state.history.bytes();
                remember(&mut state.history, max, line);
                self.history_total += state.history.bytes();
                self.keep_history_under_cap();
            }
            Keep::Topic(topic) => state.topic = Some(topic.to_string()),
        }
    }

    /// Once in a long while, every room's history together is over its cap
    /// ([`history_bytes`](super::ChatSettings::history_bytes)).
    pub(super) fn keep_history_under_cap(&mut self) {
        if self.history_total > self.settings.history_bytes {
            self.cut_history();
        }
    }

    /// Every room's history together is over its cap
    /// ([`history_bytes`](super::ChatSettings::history_bytes)): the biggest
    /// rooms' histories lose their older half, biggest first, until all
    /// together are under three quarters of it. Many lines at a time, so that this happens once in a
    /// long while, and a room of a few short lines keeps them.
    #[cold]
    fn cut_history(&mut self) {
        let target = self.settings.history_bytes / 4 * 3;
        let mut by_size: Vec<(usize, RoomId)> = self
            .rooms
            .iter()
            .map(|(&room, state)| (state.history.bytes(), room))
            .filter(|&(bytes, _)| bytes > 0)
            .collect();
        by_size.sort_unstable_by(|a, b| b.cmp(a));
        while self.history_total > target && !by_size.is_empty() {
            for &(_, room) in &by_size {
                let Some(state) = self.rooms.get_mut(&room) else {
                    continue;
                };
                let keep = state.history.bytes() / 2;
                while state.history.bytes() > keep {
                    self.history_total -= state.history.forget_oldest();
                }
                if self.history_total <= target {
                    return;
                }
            }
            by_size.retain(|&(_, room)| self.rooms[&room].history.bytes() > 0);
        }
    }

    pub(super) fn join_room(&mut self, id: ClientId, name: &str, out: &mut Vec<Output>) {
        let Some(person) = self.person_of(id) else {
            return;
        };
        let target = match Room::parse(name) {
            Ok(target) => target,
            Err(why) => return out.push(invalid(id, name, "room name", why, "# and then ")),
        };
        let current = person.room;
        if self.room_names.get(&target.key()) == Some(&current) {
            let text = Notice::AlreadyIn {
                room: self.room_name(current),
            }
            .to_string();
            return out.push(to(id, ServerLine::Notice(&text)));
        }
        let key = person.nick.key();
        let empty = self
            .room_names
            .get(&target.key())
            .and_then(|room| self.rooms.get(room))
            .is_none_or(|state| state.members.is_empty());
        if !self.room_names.contains_key(&target.key()) && !self.may_make_a_room(id) {
            let text = format!(
                "{target} does not exist, and {} rooms were made from your address in \
                 the last minute, the most it may: join one that exists, or wait a moment",
                self.settings.rooms_per_minute
            );
            return out.push(to(id, ServerLine::Error(&text)));
        }
        // Last, since it may use up an invitation.
        if let Some(why) = self.entry_refusal(id, &key, &target, out) {
            log::info!("{id}: refused entry to {target}: {why}");
            return out.push(to(id, ServerLine::Error(&why)));
        }
        let Some(person) = self.people.get(&key) else {
            return;
        };
        let notice = Notice::Left {
            nick: person.nick.as_str(),
            room: self.room_name(current),
        }
        .to_string();
        let room = self.change_room(&key, current, target, out);
        if empty {
            self.made_room(&key, room, out);
        }
        // Told once the person's sessions are in the new room, so that
        // none of them hears it.
        self.tell_leaving(current, &notice, None, out);
    }

    /// True if the client `id` may make one more room now, which then
    /// counts. Counted by address (an IPv6 /64), not by person: a guest
    /// who reconnects, or opens ten connections, is still one address.
    fn may_make_a_room(&mut self, id: ClientId) -> bool {
        let Some(session) = self.sessions.get(&id) else {
            return false;
        };
        let now = Instant::now();
        if self.rooms_made.len() > self.rooms_made_limit {
            // Windows that emptied are forgotten now and then: when the
            // map has doubled since the last look, so that many addresses
            // at once cost each room made no more than a few steps.
            self.rooms_made.retain(|_, made| !made.is_empty_at(now));
            self.rooms_made_limit = (2 * self.rooms_made.len()).max(ROOMS_MADE_LOOK);
        }
        let block = Block::of(session.peer.ip());
        let max = self.settings.rooms_per_minute;
        self.rooms_made.entry(block).or_default().allow(now, max)
    }

    /// Takes the person `key` out of `from` and into the room named `to`
    /// (made if need be), which is told and shown to each of their
    /// sessions; returns it. What `from` is told, if anything, is the
    /// caller's to say.
    pub(super) fn change_room(
        &mut self,
        key: &str,
        from: RoomId,
        to: Room,
        out: &mut Vec<Output>,
    ) -> RoomId {
        self.leave_room(key, from);
        let room = self.room_for(to);
        if let Some(person) = self.people.get_mut(key) {
            person.room = room;
        }
        self.enter_room(key, room, out);
        room
    }

    /// The room named `name`, made if it does not exist yet.
    pub(super) fn room_for(&mut self, name: Room) -> RoomId {
        if let Some(&room) = self.room_names.get(&name.key()) {
            return room;
        }
        self.next_room += 1;
        let room = RoomId(self.next_room);
        self.room_names.insert(name.key(), room);
        self.rooms.insert(
            room,
            RoomState {
                name,
                members: BTreeSet::new(),
                topic: None,
                history: History::default(),
                known: self.others.is_none(),
            },
        );
        room
    }

    /// Puts a person into a room (its `room` already says so): the room is
    /// told, then each of its sessions enters and is shown the room.
    pub(super) fn enter_room(&mut self, key: &str, room: RoomId, out: &mut Vec<Output>) {
        self.refresh_muted(key);
        let (Some(person), Some(state)) = (self.people.get(key), self.rooms.get_mut(&room)) else {
            return;
        };
        state.members.insert(key.to_string());
        if state.members.len() <= self.settings.announce_limit {
            // Before the sessions enter, so that none of them hears it.
            // Shared, it is shown only once back from the others, when
            // they are in: the first (most often the only) is left out by
            // name.
            let notice = Notice::Joined {
                nick: person.nick.as_str(),
                room: state.name.as_str(),
            }
            .to_string();
            let except = if self.others.is_some() {
                person.sessions.first().copied()
            } else {
                None
            };
            out.push(to_room(
                room,
                ServerLine::Notice(&notice),
                except,
                Keep::Nothing,
            ));
        }
        for &id in &person.sessions.clone() {
            self.show_room(id, room, out);
        }
    }

    /// One session enters the room its person is in, and is shown it: who
    /// is there, the topic, the history.
    pub(super) fn show_room(&self, id: ClientId, room: RoomId, out: &mut Vec<Output>) {
        let Some(state) = self.rooms.get(&room) else {
            return;
        };
        out.push(Output::Enter { id, room });
        let text = Notice::YouAreIn {
            room: state.name.as_str(),
            here: state.members.len(),
        }
        .to_string();
        out.push(to(id, ServerLine::Notice(&text)));
        if state.known {
            show_past(id, state, out);
        }
    }

    /// Takes a person out of a room's list; an empty room is forgotten,
    /// except the lobby and, with a store, a room that keeps something.
    pub(super) fn leave_room(&mut self, key: &str, room: RoomId) {
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        state.members.remove(key);
        if !state.members.is_empty() || kept_when_empty(self.keeps_empty_rooms, state) {
            return;
        }
        self.forget_speakers(room);
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        if state.name.as_str() != protocol::LOBBY {
            let room_key = state.name.key();
            self.history_total -= state.history.bytes();
            self.room_names.remove(&room_key);
            self.rooms.remove(&room);
            self.rules_left_behind(&room_key);
        } else if self.others.is_some() {
            // Nobody here hears the lobby any more: what it knew goes
            // stale, and is asked for again when someone comes back.
            state.known = false;
            self.history_total -= state.history.bytes();
            state.history.clear();
            state.topic = None;
        }
    }

    /// Tells a room someone left it, once its sessions are out of it (but
    /// `except`, a session that may still be there under another name).
    pub(super) fn tell_leaving(
        &self,
        room: RoomId,
        notice: &str,
        except: Option<ClientId>,
        out: &mut Vec<Output>,
    ) {
        // Shared, the room may live on on other servers, with nobody here.
        let announce = match self.rooms.get(&room) {
            None => self.others.is_some(),
            Some(state) if self.others.is_some() => {
                state.members.len() < self.settings.announce_limit
            }
            Some(state) => (1..self.settings.announce_limit).contains(&state.members.len()),
        };
        if announce {
            out.push(to_room(
                room,
                ServerLine::Notice(notice),
                except,
                Keep::Nothing,
            ));
        }
    }

    /// `/who [PAGE]`: the names in a room, sorted, a page at a time.
    pub(super) fn who_page(&self, room: RoomId, page: Option<&str>) -> Result<String, String> {
        let Some(state) = self.rooms.get(&room) else {
            return Err("you are in no room".to_string());
        };
        let count = state.members.len();
        let (page, first) = page_of("/who", page, count, WHO_PAGE)?;
        let names = state
            .members
            .iter()
            .skip(first)
            .take(WHO_PAGE)
            .filter_map(|key| self.people.get(key).map(|p| p.nick.as_str()))
            .collect();
        Ok(Notice::Who(WhoList {
            room: state.name.as_str(),
            count,
            page: Page::of(page, count, WHO_PAGE),
            names,
            remark: None,
        })
        .to_string())
    }

    /// `/rooms [PAGE]`: the rooms and how many are in each, sorted.
    pub(super) fn rooms_page(&self, page: Option<&str>) -> Result<String, String> {
        let count = self.room_names.len();
        let (page, first) = page_of("/rooms", page, count, ROOMS_PAGE)?;
        let rooms = self
            .room_names
            .values()
            .skip(first)
            .take(ROOMS_PAGE)
            .filter_map(|room| self.rooms.get(room))
            .map(|state| (state.name.as_str(), state.members.len()));
        Ok(Notice::Rooms(RoomList {
            page: Page::of(page, count, ROOMS_PAGE),
            rooms: rooms.collect(),
            remark: None,
        })
        .to_string())
    }

    pub(super) fn room_name(&self, room: RoomId) -> &str {
        self.rooms
            .get(&room)
            .map_or("?", |state| state.name.as_str())
    }
}

/// How many addresses' windows of rooms made are kept before the empty
/// ones are first looked for.
pub(super) const ROOMS_MADE_LOOK: usize = 4096;

/// When the people of one address made their last new rooms, as many as
/// they may make in a minute: a window that slides with time, given by the
/// caller.
#[derive(Debug, Default)]
pub(super) struct RoomsMade(VecDeque<Instant>);

impl RoomsMade {
    /// True if one more room may be made at `now` by someone who may make
    /// `max` a minute; it then counts.
    pub(super) fn allow(&mut self, now: Instant, max: usize) -> bool {
        self.slide(now);
        if self.0.len() >= max {
            return false;
        }
        self.0.push_back(now);
        true
    }

    /// True if no room made in the minute before `now` is left in it.
    pub(super) fn is_empty_at(&mut self, now: Instant) -> bool {
        self.slide(now);
        self.0.is_empty()
    }

    /// Forgets what was made a minute or more before `now`.
    fn slide(&mut self, now: Instant) {
        while self
            .0
            .front()
            .is_some_and(|&made| now.saturating_duration_since(made) >= Duration::from_secs(60))
        {
            self.0.pop_front();
        }
    }
}

/// A room's last lines, and what they weigh. The chat keeps the sum over
/// all rooms: each change here is a change there.
#[derive(Debug, Default)]
pub(super) struct History {
    lines: VecDeque<Arc<str>>,
    bytes: usize,
}

impl History {
    /// Forgets the oldest line; returns its bytes.
    fn forget_oldest(&mut self) -> usize {
        let gone = self.lines.pop_front().map_or(0, |line| line.len());
        self.bytes -= gone;
        gone
    }

    /// Forgets every line.
    pub(super) fn clear(&mut self) {
        self.lines.clear();
        self.bytes = 0;
    }

    /// The lines, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        self.lines.iter()
    }

    /// What the lines weigh, in bytes.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Keeps `line` among a room's last `max` lines.
pub(super) fn remember(history: &mut History, max: usize, line: &Arc<str>) {
    history.bytes += line.len();
    history.lines.push_back(Arc::clone(line));
    while history.lines.len() > max {
        history.forget_oldest();
    }
}

/// What a newcomer to a room is shown of its past: its topic, and its
/// last lines.
pub(super) fn show_past(id: ClientId, state: &RoomState, out: &mut Vec<Output>) {
    if let Some(topic) = &state.topic {
        let text = format!("topic of {}: {topic}", state.name);
        out.push(to(id, ServerLine::Notice(&text)));
    }
    for line in state.history.iter() {
        out.push(to(id, ServerLine::History(line)));
    }
}

/// Which page of `count` items was asked for, and the index of its first
/// item; an error that says what can be asked for, for any other.
pub(super) fn page_of(
    command: &str,
    page: Option<&str>,
    count: usize,
    per_page: usize,
) -> Result<(usize, usize), String> {
    let pages = count.div_ceil(per_page).max(1);
    let page = match page {
        None => 1,
        Some(text) => match text.parse::<usize>() {
            Ok(page) if (1..=pages).contains(&page) => page,
            _ if pages == 1 => {
                return Err(format!("{command} has one page: {command} shows it"));
            }
            _ => {
                return Err(format!(
                    "{command} has {pages} pages: {command} 1 to {command} {pages}"
                ));
            }
        },
    };
    Ok((page, (page - 1) * per_page))
}

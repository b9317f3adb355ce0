//! Rooms: entering, leaving and who is told; what a room keeps and
//! shows a newcomer; `/who` and `/rooms` a page at a time. Not what
//! commands mean (`commands`).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use super::commands::invalid;
use super::{to, to_room, Chat, ClientId, Keep, Output, RoomId, RoomState, ROOMS_PAGE, WHO_PAGE};
use crate::protocol::{self, Notice, Page, Room, RoomList, ServerLine, WhoList};

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
            Keep::History => remember(&mut state.history, max, line),
            Keep::Topic(topic) => state.topic = Some(topic.to_string()),
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
        let notice = Notice::Left {
            nick: person.nick.as_str(),
            room: self.room_name(current),
        }
        .to_string();
        self.leave_room(&key, current);
        let room = self.room_for(target);
        if let Some(person) = self.people.get_mut(&key) {
            person.room = room;
        }
        self.enter_room(&key, room, out);
        // Told once the person's sessions are in the new room, so that
        // none of them hears it.
        self.tell_leaving(current, &notice, None, out);
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
                history: VecDeque::new(),
                known: self.others.is_none(),
            },
        );
        room
    }

    /// Puts a person into a room (its `room` already says so): the room is
    /// told, then each of its sessions enters and is shown the room.
    pub(super) fn enter_room(&mut self, key: &str, room: RoomId, out: &mut Vec<Output>) {
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
    /// except the lobby.
    pub(super) fn leave_room(&mut self, key: &str, room: RoomId) {
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        state.members.remove(key);
        if !state.members.is_empty() {
            return;
        }
        if state.name.as_str() != protocol::LOBBY {
            self.room_names.remove(&state.name.key());
            self.rooms.remove(&room);
        } else if self.others.is_some() {
            // Nobody here hears the lobby any more: what it knew goes
            // stale, and is asked for again when someone comes back.
            state.known = false;
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

/// Keeps `line` among a room's last `max` lines.
pub(super) fn remember(history: &mut VecDeque<Arc<str>>, max: usize, line: &Arc<str>) {
    history.push_back(Arc::clone(line));
    while history.len() > max {
        history.pop_front();
    }
}

/// What a newcomer to a room is shown of its past: its topic, and its
/// last lines.
pub(super) fn show_past(id: ClientId, state: &RoomState, out: &mut Vec<Output>) {
    if let Some(topic) = &state.topic {
        let text = format!("topic of {}: {topic}", state.name);
        out.push(to(id, ServerLine::Notice(&text)));
    }
    for line in &state.history {
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

//! Rooms that outlive their members: with a store, a room is given back at
//! start as it was kept ([`Chat::restore_room`]), and a room that empties
//! is kept while it has something to keep. Not how it is kept (the
//! [`store`](crate::store)), nor what rooms are otherwise (`rooms`).

use std::sync::Arc;

use super::rooms::remember;
use super::{Chat, RoomId, RoomState};
use crate::protocol::Room;

impl Chat {
    /// From now on, a room that empties is not forgotten while it keeps
    /// history or a topic: a server with a store keeps it across restarts,
    /// and would otherwise forget it while it runs.
    pub fn keep_empty_rooms(&mut self) {
        self.keeps_empty_rooms = true;
    }

    /// Gives back a room as the store kept it: its name, topic and last
    /// lines (oldest first; only the last `--history` are kept). A name
    /// that is not a room's is refused, and nothing changes.
    pub fn restore_room(
        &mut self,
        name: &str,
        topic: Option<&str>,
        lines: &[Arc<str>],
    ) -> Result<RoomId, String> {
        let name = Room::parse(name).map_err(|why| format!("{name:?} is no room's name: {why}"))?;
        let room = self.room_for(name);
        let max = self.settings.history;
        let Some(state) = self.rooms.get_mut(&room) else {
            return Ok(room);
        };
        if let Some(topic) = topic {
            state.topic = Some(topic.to_owned());
        }
        self.history_total -= state.history.bytes();
        for line in lines {
            remember(&mut state.history, max, line);
        }
        self.history_total += state.history.bytes();
        self.keep_history_under_cap();
        Ok(room)
    }

    /// The room's name as it was written, for the store.
    pub fn room_name_as_written(&self, room: RoomId) -> Option<String> {
        self.rooms.get(&room).map(|state| state.name.to_string())
    }
}

/// Whether a room nobody is in any more is kept: only with a store
/// (`with_store`), and only while it keeps something.
pub(super) fn kept_when_empty(with_store: bool, state: &RoomState) -> bool {
    // Once rooms have moderation rules, a room that has rules is kept too.
    with_store && (state.topic.is_some() || state.history.bytes() > 0)
}

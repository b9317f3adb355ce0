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
    // A room's moderation rules are kept apart from the room (by its key),
    // so they need not keep it.
    with_store && (state.topic.is_some() || state.history.bytes() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{ChatSettings, ClientId, Output};
    use crate::line::Frame;

    const SETTINGS: ChatSettings = ChatSettings {
        max_line: 100,
        history: 2,
        history_bytes: 1 << 20,
        rooms_per_minute: 100,
        announce_limit: 100,
        max_sessions: 3,
    };

    /// What client 1 is sent after `text`, as lines.
    fn said(chat: &mut Chat, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        chat.line(ClientId(1), Frame::Line(text.into()), &mut out);
        out.into_iter()
            .filter_map(|output| match output {
                Output::To {
                    id: ClientId(1),
                    line,
                } => Some(line.trim_end().to_string()),
                _ => None,
            })
            .collect()
    }

    /// A chat with `#Tea` given back, and client 1 in the lobby.
    fn with_tea(keep_empty_rooms: bool) -> Chat {
        let mut chat = Chat::new(SETTINGS);
        if keep_empty_rooms {
            chat.keep_empty_rooms();
        }
        let lines: Vec<Arc<str>> = ["chat a one\n", "chat a two\n", "chat b three\n"]
            .map(Arc::from)
            .to_vec();
        chat.restore_room("#Tea", Some("leaves"), &lines).unwrap();
        let mut out = Vec::new();
        chat.join(
            ClientId(1),
            "127.0.0.1:5000".parse().unwrap(),
            None,
            &mut out,
        );
        chat
    }

    #[test]
    fn a_restored_room_shows_its_topic_and_last_lines_to_a_newcomer() {
        let mut chat = with_tea(true);
        let shown = said(&mut chat, "/join #tea");
        assert_eq!(
            shown[1..],
            [
                "notice topic of #Tea: leaves",
                "history chat a two",
                "history chat b three"
            ],
            "{shown:?}"
        );
        assert!(chat.restore_room("tea", None, &[]).is_err());
    }

    #[test]
    fn with_a_store_a_room_that_keeps_something_outlives_its_members() {
        let mut chat = with_tea(true);
        said(&mut chat, "/join #tea");
        said(&mut chat, "/join #nothing");
        said(&mut chat, "/join #lobby");
        assert!(chat.room_named("#TEA").is_some());
        assert!(chat.room_named("#nothing").is_none());
        // Without one, as before: an empty room is forgotten.
        let mut chat = with_tea(false);
        said(&mut chat, "/join #tea");
        said(&mut chat, "/join #lobby");
        assert!(chat.room_named("#tea").is_none());
    }
}

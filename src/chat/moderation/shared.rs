//! Moderation shared with other servers: a room's rules and the server
//! bans, whole, as they arrive from the others (every server's changes,
//! this one's included, in Redis' order), applied to the people here;
//! and who makes a room, once its past says whether it is new everywhere.
//! Not how they travel (the hub's `Elsewhere`), nor the commands.

use super::{Chat, Output, RoomId, RoomRules};

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
        if let Err(why) = self.restore_rules(room_key, rules.unwrap_or_default()) {
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
                let Some(who) = self.identity(key) else {
                    continue;
                };
                let ban = rules
                    .bans
                    .iter()
                    .find(|ban| ban.live(now) && ban.names(&who));
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
        if let Err(why) = self.restore_server_bans(bans.unwrap_or_default()) {
            log::warn!("the server bans from the other servers are refused: {why}");
            return;
        }
        let count = self.moderation.server_bans.len();
        log::info!("{count} server bans, as the other servers have them");
        let now = self.now();
        let mut named = Vec::new();
        for key in self.people.keys() {
            let Some(who) = self.identity(key) else {
                continue;
            };
            let ban = self
                .moderation
                .server_bans
                .iter()
                .find(|ban| ban.live(now) && ban.names(&who));
            if let Some(ban) = ban {
                let told = format!("you are banned from this server {}", ban.told(now));
                let public = format!("banned from the server by {}", ban.by);
                named.push((key.clone(), told, public));
            }
        }
        for (key, told, public) in named {
            self.disconnect(&key, &told, &public, out);
        }
    }

    /// A room this server joined: its rules as the others keep them, and
    /// whether it is `fresh` (nothing of it in Redis: nobody on any server
    /// made it before). Whoever entered it here while nobody here was in
    /// it is its operator only if it is fresh; a room whose keys exist
    /// is not new, even with nobody in it now.
    pub(in crate::chat) fn recent_rules(
        &mut self,
        room: RoomId,
        rules: Option<&str>,
        fresh: bool,
        out: &mut Vec<Output>,
    ) {
        let maker = self.moderation.makers.remove(&room);
        let Some(room_key) = self.room_key(room) else {
            return;
        };
        self.rules_arrived(&room_key, rules, out);
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
    }
}

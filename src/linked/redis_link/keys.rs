//! The names of the link's keys and channels in Redis: a room's, and the
//! few the whole chat shares; and reading a room back from its channel's
//! name. Not what is kept under them (the scripts: `scripts.rs` for
//! lines, `rules.rs` and `names.rs`).

#[cfg(doc)]
use super::{rules::RULES_SCRIPT, scripts::PUBLISH_SCRIPT, RedisLink};

/// The key whose random value names the Redis data set (see "When Redis
/// is gone" in the module documentation).
pub(super) const EPOCH_KEY: &str = "chat:epoch";

/// The channel every node listens to for questions to all
/// ([`RedisLink::ask_everyone`]).
pub(super) const ASK_CHANNEL: &str = "chat:ask";

/// The counter that numbers nodes as they start ([`RedisLink::number`]).
pub(super) const NODES_KEY: &str = "chat:nodes";

/// The channel every node listens to for moderation's news: the server
/// bans (`s TEXT`, whole, an empty TEXT for none) and each room's new
/// rules version (`r ROOM VERSION`). The nodes in a room have the marker
/// in its order ([`RedisLink::write_rules`]); this one is for the nodes
/// that are not, which read the rules when they hear it.
pub(super) const MODERATION_CHANNEL: &str = "chat:moderation";

/// The server bans, shared by every node ([`RedisLink::share_server_bans`]);
/// no expiry: each ban carries its own end.
pub(super) const SERVER_BANS_KEY: &str = "chat:server-bans";

/// The key names of one room. The braces make the room's name the
/// Redis Cluster hash tag of each, and of its channel: a room's keys and
/// channel share one slot, so one master.
pub(super) struct Keys {
    pub(super) seq: String,
    pub(super) history: String,
    pub(super) senders: String,
    pub(super) topic: String,
    /// The bytes the history's entries hold.
    pub(super) size: String,
    /// The lines the history's entries hold (markers of rules included).
    pub(super) lines: String,
    /// The room's moderation rules and their version, a hash
    /// ([`RedisLink::write_rules`]).
    pub(super) rules: String,
    pub(super) channel: String,
}

impl Keys {
    pub(super) fn of(room: &str) -> Keys {
        Keys {
            seq: format!("room:{{{room}}}:seq"),
            history: format!("room:{{{room}}}:history"),
            senders: format!("room:{{{room}}}:senders"),
            topic: format!("room:{{{room}}}:topic"),
            size: format!("room:{{{room}}}:size"),
            lines: format!("room:{{{room}}}:lines"),
            rules: format!("room:{{{room}}}:rules"),
            channel: channel(room),
        }
    }

    /// The keys [`PUBLISH_SCRIPT`] takes, in its order: all but the rules.
    pub(super) fn of_lines(&self) -> [&str; 6] {
        [
            &self.seq,
            &self.history,
            &self.senders,
            &self.topic,
            &self.size,
            &self.lines,
        ]
    }

    /// The keys [`RULES_SCRIPT`] takes, in its order: those of the room's
    /// order that a marker touches, and the rules.
    pub(super) fn of_rules(&self) -> [&str; 6] {
        [
            &self.seq,
            &self.history,
            &self.topic,
            &self.size,
            &self.lines,
            &self.rules,
        ]
    }

    /// Every key of the room, the rules last.
    pub(super) fn all(&self) -> [&str; 7] {
        [
            &self.seq,
            &self.history,
            &self.senders,
            &self.topic,
            &self.size,
            &self.lines,
            &self.rules,
        ]
    }
}

/// A room's pub/sub channel.
pub(super) fn channel(room: &str) -> String {
    format!("room:{{{room}}}")
}

/// The room whose channel this is, if it is one.
pub(super) fn room_of(channel: &str) -> Option<&str> {
    channel.strip_prefix("room:{")?.strip_suffix('}')
}

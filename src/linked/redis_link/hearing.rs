//! What the subscriber hears besides a room's lines: how a session hears
//! Redis (one Redis directly, a cluster through `shards.rs`), and the
//! classic channels' messages (moderation's news, messages to this node,
//! questions to all). Not the order of a room's lines (`subscriber.rs`).

// The link's types, constants and helpers, which this part shares.
use super::shards::Heard;
use super::subscriber::{lost, Subscriber, SubscriberEnd};
use super::*;

/// How a session hears Redis.
pub(super) enum Hearing<'c> {
    /// One Redis: on the subscriber's own connection, read in its thread
    /// for up to a poll at a time (a line ends the read at once).
    Alone(redis::PubSub<'c>),
    /// A cluster: through a thread per listening connection (`shards.rs`).
    Cluster(Shards),
}

impl Subscriber {
    /// What a listening thread of a cluster heard.
    pub(super) fn on_heard(
        &mut self,
        query: &mut Router,
        heard: Heard,
    ) -> Result<(), SubscriberEnd> {
        match heard {
            Heard::Line(room, payload) => self.on_message(query, &room, &payload),
            Heard::Classic(channel, payload) => self.on_classic(query, &channel, &payload),
            // Its slot moved away: start over on the topology as it is now.
            Heard::Unsubscribed(room) if self.next.contains_key(&room) => Err(SubscriberEnd::Lost(
                "a room's slot moved to another master".to_owned(),
            )),
            Heard::Subscribed | Heard::Unsubscribed(_) => Ok(()),
            Heard::Lost(error) => Err(lost(&self.target, error)),
        }
    }

    /// A message on a classic channel: moderation's, this node's, the
    /// questions to all, or (one Redis) a room's.
    pub(super) fn on_classic(
        &mut self,
        query: &mut Router,
        channel: &str,
        bytes: &[u8],
    ) -> Result<(), SubscriberEnd> {
        if channel == MODERATION_CHANNEL {
            return self.on_moderation(query, bytes);
        }
        if channel == self.own_channel || channel == ASK_CHANNEL {
            return self.on_node_message(channel == self.own_channel, bytes);
        }
        match room_of(channel) {
            Some(room) => self.on_message(query, room, bytes),
            None => Ok(()),
        }
    }

    /// A message on the moderation channel: `s TEXT` (the server bans,
    /// TEXT empty for none) or `r ROOM VERSION` (a room's rules changed).
    pub(super) fn on_moderation(
        &mut self,
        query: &mut Router,
        bytes: &[u8],
    ) -> Result<(), SubscriberEnd> {
        if let Some(text) = bytes.strip_prefix(b"r ") {
            return match std::str::from_utf8(text) {
                Ok(text) => self.rules_changed(query, text),
                Err(_) => Ok(()),
            };
        }
        let whole = |text: &str| (!text.is_empty()).then(|| text.to_owned());
        let delivery = std::str::from_utf8(bytes).ok().and_then(|text| {
            let (kind, rest) = text.split_once(' ')?;
            match kind {
                "s" => {
                    self.server_bans = whole(rest);
                    Some(Delivery::ServerBans(whole(rest)))
                }
                _ => None,
            }
        });
        match delivery {
            Some(delivery) => self.send(delivery),
            None => {
                log::warn!("redis {}: a malformed moderation message", self.target.addr);
                Ok(())
            }
        }
    }

    /// A message for this node (`to_us`: `p NAME LINE`, a private line
    /// for a user here, `m NAME ACT`, a moderator's act for one, or
    /// `r TICKET ANSWER`, an answer to a question of
    /// ours), or a question to all (`RUN TICKET QUESTION`).
    pub(super) fn on_node_message(&self, to_us: bool, bytes: &[u8]) -> Result<(), SubscriberEnd> {
        // A wake-up (see `RedisLink::join_room`): the loop looks at the rooms.
        if to_us && bytes == b"w" {
            return Ok(());
        }
        let delivery = std::str::from_utf8(bytes).ok().and_then(|text| {
            let (first, rest) = text.split_once(' ')?;
            let (second, rest) = rest.split_once(' ')?;
            Some(match (to_us, first) {
                (true, "p") => Delivery::Private {
                    to: second.to_owned(),
                    line: rest.to_owned(),
                },
                (true, "m") => Delivery::Act {
                    to: second.to_owned(),
                    act: rest.to_owned(),
                },
                (true, "r") => Delivery::Answer {
                    ticket: second.parse().ok()?,
                    answer: rest.to_owned(),
                },
                (true, _) => return None,
                (false, run) => Delivery::Question {
                    run: run.to_owned(),
                    ticket: second.parse().ok()?,
                    question: rest.to_owned(),
                },
            })
        });
        match delivery {
            Some(delivery) => self.send(delivery),
            None => {
                log::warn!(
                    "redis {}: a malformed message to the node",
                    self.target.addr
                );
                Ok(())
            }
        }
    }
}

//! What the link going down and coming back does here: what waited for
//! Redis is shown here, or kept for its return (changes of rules); and
//! the notices everyone here is told. Not how the link notices either
//! (`redis_link`), nor what the chat does then.

use super::moderation::Publication;
use super::redis_link::RulesCopy;
use super::{Linked, LINK_DOWN, LINK_UP, LINK_UP_HISTORY_LOST};
use crate::elsewhere::{Elsewhere, Told, Waiting};

impl Linked {
    /// Redis cannot be reached: lines that waited for a room's past would
    /// wait the whole outage, and those that waited for the outbox too, so
    /// they are shown here now; changes of rules that waited go when the
    /// link is back.
    pub(super) fn link_down(&mut self, reason: &str) -> Told {
        log::warn!("link to the other servers down: {reason}");
        let mut lines = Vec::new();
        let mut changes = Vec::new();
        for joined in self.rooms.values_mut() {
            for waited in joined.waiting.iter_mut().flat_map(|w| w.drain(..)) {
                match waited {
                    Waiting::Line(line) => lines.push(line),
                    // Made before the room's rules were known: it only adds.
                    Waiting::Rules { room, rules } => {
                        changes.push((room, RulesCopy::default(), rules));
                    }
                }
            }
        }
        for (room, waited) in self.overflow.drain(..) {
            match waited {
                Publication::Line(line) => lines.push(line),
                Publication::Rules { base, rules } => changes.push((room, base, rules)),
            }
        }
        let rooms = &self.rooms;
        lines.retain(|line| rooms.contains_key(&line.room));
        for (room, base, rules) in changes {
            self.keep_unsent(room, base, rules);
        }
        self.held_back = 0;
        Told::Unreachable {
            notice: LINK_DOWN,
            lines,
        }
    }

    /// Redis lost its data: each room's rules as this server had them go
    /// back, made on none (so they only add to what another server wrote
    /// back first), ahead of the changes made meanwhile.
    fn write_back(&mut self) {
        let copies: Vec<(String, Option<String>)> = self
            .copies
            .iter()
            .filter(|(_, copy)| copy.rules.is_some())
            .map(|(room, copy)| (room.clone(), copy.rules.clone()))
            .collect();
        for (room, rules) in copies {
            self.change_rules(room, RulesCopy::default(), rules);
        }
    }

    /// Redis is back, and what was missed meanwhile delivered (the rooms'
    /// rules first): the changes of rules made here meanwhile go now.
    /// `history_lost`: Redis lost its data meanwhile, so this server took
    /// a new number, and its new guests are named by it.
    pub(super) fn link_up(&mut self, history_lost: bool) -> Told {
        if history_lost {
            self.write_back();
        }
        self.send_unsent();
        if history_lost {
            Told::Reachable {
                notice: LINK_UP_HISTORY_LOST,
                guest_prefix: self.guest_prefix(),
            }
        } else {
            Told::Reachable {
                notice: LINK_UP,
                guest_prefix: None,
            }
        }
    }
}

//! The one seam between this server's chat and any other servers it is
//! shared with: the interface ([`Elsewhere`]), the values that cross it
//! (what the chat asks, [`Ask`], and is told, [`Told`], in `news`), and
//! [`Alone`], a server with no others; not the link through Redis
//! (`linked`, behind the `redis` feature).
//!
//! The hub is generic over [`Elsewhere`], so a server alone costs nothing:
//! [`Alone`]'s methods are empty or give the line straight back, and inline
//! away. A linked server pays, per room line, a few indirect calls through
//! a box and, when the line comes back from Redis, one downcast of an
//! [`Arrival`]: small beside the round trip to Redis.
//!
//! Next: [`hub`](crate::hub), which holds the implementation.

use std::any::Any;

pub use crate::chat::RoomLine;
use crate::chat::{RoomId, Save};
use crate::hub::Event;
use crate::queue;

mod news;

pub use news::{
    Act, Ask, Asker, Claim, Deed, Query, Reach, Sent, Told, Unasked, Waiting, WhoPart,
    MOST_IN_A_ROOM, MOST_NAMES_ASKED,
};

/// Something an implementation of [`Elsewhere`] received on a thread of
/// its own, on its way to the hub ([`Event::Elsewhere`]); only that
/// implementation knows what is inside.
pub struct Arrival(Box<dyn Any + Send>);

impl Arrival {
    /// Wraps what arrived.
    pub fn new<T: Any + Send>(inside: T) -> Arrival {
        Arrival(Box::new(inside))
    }

    /// What arrived, if it is a `T`.
    pub fn open<T: Any>(self) -> Option<T> {
        self.0.downcast().ok().map(|inside| *inside)
    }
}

impl std::fmt::Debug for Arrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Arrival(..)")
    }
}

/// The other servers this chat is shared with, as the hub sees them.
///
/// Only the hub thread calls these, between events; none may wait on the
/// network. `key` arguments give a room's name on every server, asked
/// only when needed (a server alone never asks).
pub trait Elsewhere: Send {
    /// How this server names its guests, when shared: a prefix unlike
    /// every other server's. `None` for a server alone.
    fn guest_prefix(&self) -> Option<String>;

    /// Called once before the hub starts: whatever arrives from the
    /// others from now on goes to the hub through `hub`, as
    /// [`Event::Elsewhere`], put there by the threads it arrives on.
    fn forward(&mut self, hub: queue::Sender<Event>);

    /// A room line was said here. Given back if it is to be shown here
    /// now; `None` if it went to the others, to be shown when it comes
    /// back ([`Told::Lines`]).
    fn say(&mut self, line: RoomLine, key: &dyn Fn() -> Option<String>) -> Option<RoomLine>;

    /// Hands the others what the chat asks; the ask back, with why, if it
    /// cannot go now.
    fn ask(&mut self, ask: Ask) -> Result<(), (Ask, Unasked)>;

    /// This server's part of the answer to a [`Told::Question`].
    fn answer(&self, asker: &Asker, answer: &str);

    /// The first member here entered `room`.
    fn entered(&mut self, room: RoomId, key: &dyn Fn() -> Option<String>);

    /// The last member here left `room`.
    fn emptied(&mut self, room: RoomId);

    /// The event in hand is handled.
    fn event_done(&mut self);

    /// What the hub does with something that arrived ([`Event::Elsewhere`]).
    fn arrived(&mut self, arrival: Arrival) -> Told;

    /// Moderation's state changed here ([`Save`]): shared, the other
    /// servers are given it, and it comes back to every server (this one
    /// included) as [`Told::Rules`] or [`Told::ServerBans`].
    fn save(&mut self, save: Save);
}

impl<E: Elsewhere + ?Sized> Elsewhere for Box<E> {
    fn guest_prefix(&self) -> Option<String> {
        (**self).guest_prefix()
    }
    fn forward(&mut self, hub: queue::Sender<Event>) {
        (**self).forward(hub);
    }
    fn say(&mut self, line: RoomLine, key: &dyn Fn() -> Option<String>) -> Option<RoomLine> {
        (**self).say(line, key)
    }
    fn ask(&mut self, ask: Ask) -> Result<(), (Ask, Unasked)> {
        (**self).ask(ask)
    }
    fn answer(&self, asker: &Asker, answer: &str) {
        (**self).answer(asker, answer);
    }
    fn entered(&mut self, room: RoomId, key: &dyn Fn() -> Option<String>) {
        (**self).entered(room, key);
    }
    fn emptied(&mut self, room: RoomId) {
        (**self).emptied(room);
    }
    fn event_done(&mut self) {
        (**self).event_done();
    }
    fn arrived(&mut self, arrival: Arrival) -> Told {
        (**self).arrived(arrival)
    }
    fn save(&mut self, save: Save) {
        (**self).save(save);
    }
}

/// A server alone: no other servers, so every room line is shown here at
/// once, and nothing is ever asked or arrives.
#[derive(Debug, Clone, Copy, Default)]
pub struct Alone;

impl Elsewhere for Alone {
    fn guest_prefix(&self) -> Option<String> {
        None
    }
    fn forward(&mut self, _hub: queue::Sender<Event>) {}
    #[inline]
    fn say(&mut self, line: RoomLine, _key: &dyn Fn() -> Option<String>) -> Option<RoomLine> {
        Some(line)
    }
    fn ask(&mut self, _ask: Ask) -> Result<(), (Ask, Unasked)> {
        // A chat alone asks nothing (see `Chat::shared`); were it to, there
        // is nobody to ask, and so nothing to wait for.
        Ok(())
    }
    fn answer(&self, _asker: &Asker, _answer: &str) {}
    #[inline]
    fn entered(&mut self, _room: RoomId, _key: &dyn Fn() -> Option<String>) {}
    #[inline]
    fn emptied(&mut self, _room: RoomId) {}
    #[inline]
    fn event_done(&mut self) {}
    fn arrived(&mut self, _arrival: Arrival) -> Told {
        Told::Nothing
    }
    #[inline]
    fn save(&mut self, _save: Save) {}
}

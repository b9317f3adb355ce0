//! Where the link's threads hand what they deliver: a [`Sink`] the node
//! gives once ([`RedisLink::deliver_to`]), for a chat server the hub's own
//! queue, so that no thread of the link's stands between. Not what is
//! delivered ([`Delivery`], `messages.rs`), nor who delivers it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use crossbeam_channel::SendTimeoutError;

use super::{Delivery, LinkState, RedisLink};
use crate::sync;

/// Where the link hands what it delivers, from the thread that has it (the
/// subscriber, or the directory), each thread's deliveries in the order
/// it made them. For a chat server, the hub's queue of events
/// (`Linked::forward`); for [`RedisLink::start`], a queue whose other end it returns.
pub trait Sink: Send + Sync {
    /// Hands on `delivery`, waiting while there is no room for it, and
    /// looking at `stop` at least every `poll` meanwhile. False, the
    /// delivery dropped, once `stop` is set or nobody takes deliveries any
    /// more.
    fn deliver(&self, delivery: Delivery, poll: Duration, stop: &AtomicBool) -> bool;
}

impl Sink for crossbeam_channel::Sender<Delivery> {
    fn deliver(&self, delivery: Delivery, poll: Duration, stop: &AtomicBool) -> bool {
        let mut delivery = delivery;
        loop {
            match self.send_timeout(delivery, poll) {
                Ok(()) => return true,
                Err(SendTimeoutError::Timeout(back)) if !stop.load(Ordering::SeqCst) => {
                    delivery = back;
                }
                Err(_) => return false,
            }
        }
    }
}

/// The link's end of its [`Sink`], shared by the threads that deliver.
/// Until the node gives a sink, a thread that has something to deliver
/// waits for one (Redis buffers meanwhile), as it would for room.
pub(super) struct Outlet {
    /// Set once, and never changed: read without a lock.
    sink: OnceLock<Box<dyn Sink>>,
    /// Held to set `sink`, and to wait for it: nothing else.
    giving: Mutex<()>,
    given: Condvar,
    /// Whether the link stops, which ends every wait here; and the count
    /// of deliveries, to which [`Outlet::give`] adds what it hands on.
    shared: Arc<LinkState>,
    /// [`LinkSettings::poll`](super::LinkSettings::poll): how often a wait
    /// for room in the sink, or for a sink, looks at whether the link
    /// stops.
    poll: Duration,
}

impl Outlet {
    pub(super) fn new(shared: Arc<LinkState>, poll: Duration) -> Outlet {
        Outlet {
            sink: OnceLock::new(),
            giving: Mutex::new(()),
            given: Condvar::new(),
            shared,
            poll,
        }
    }

    /// Hands `first` (what the link had at start) to `sink`, and then
    /// makes it the link's, in that order: no thread delivers before
    /// `first` is in. False, `sink` unused, if the link has one already.
    ///
    /// `first` is counted in [`LinkState::delivered`] here, by the one
    /// thread that gives the sink, before the subscriber (the count's
    /// owner) can add to it: it has to take the lock this holds.
    pub(super) fn give(&self, first: Option<Delivery>, sink: Box<dyn Sink>) -> bool {
        let _giving = sync::lock(&self.giving);
        if self.sink.get().is_some() {
            return false;
        }
        if let Some(delivery) = first {
            if sink.deliver(delivery, self.poll, &self.shared.stop) {
                self.shared.delivered.add(1);
            }
        }
        // Cannot be refused: the sink is set only here, under the lock,
        // and was not set above.
        let _ = self.sink.set(sink);
        self.given.notify_all();
        true
    }

    /// Hands `delivery` to the node's sink, waiting while it has no room,
    /// or while the node has given none yet. False, the delivery dropped,
    /// once the link stops or nobody takes deliveries any more.
    pub(super) fn send(&self, delivery: Delivery) -> bool {
        let sink = match self.sink.get() {
            Some(sink) => sink.as_ref(),
            None => match self.wait() {
                Some(sink) => sink,
                None => return false,
            },
        };
        sink.deliver(delivery, self.poll, &self.shared.stop)
    }

    /// The sink, once given; `None` if the link stops first.
    fn wait(&self) -> Option<&dyn Sink> {
        let mut giving = sync::lock(&self.giving);
        loop {
            if let Some(sink) = self.sink.get() {
                return Some(sink.as_ref());
            }
            if self.shared.stopping() {
                return None;
            }
            giving = sync::wait_timeout(&self.given, giving, self.poll);
        }
    }
}

impl std::fmt::Debug for Outlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outlet")
            .field("given", &self.sink.get().is_some())
            .finish()
    }
}

impl RedisLink {
    /// From now on, what the link delivers goes to `sink`: first what it
    /// had at start, then whatever its threads deliver, each thread's in
    /// order. Only once: false, `sink` unused, if the link has one
    /// already (a link from [`RedisLink::start`] has its queue).
    pub fn deliver_to(&mut self, sink: Box<dyn Sink>) -> bool {
        self.outlet.give(self.first.take(), sink)
    }
}

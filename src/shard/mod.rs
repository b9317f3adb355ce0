//! Writer shards: a few threads that send to every client, by one rule:
//! *send what fits, remember the rest, wait until the kernel has room*.
//! Here: the work a shard takes, and starting one. A shard's thread is
//! `worker.rs`; each client's waiting lines, `backlog.rs`. A shard knows
//! sockets and rustls, not chat.
//!
//! Next: [`server`](crate::server), which starts the shards, the hub and
//! a thread per client.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mio::{Poll, Token, Waker};

use crate::budget::{Budget, Outgoing};
use crate::chat::{ClientId, CloseReason, RoomId};
use crate::duplex::WriteHalf;
use crate::metrics::{Disconnect, ShardFigures};
use crate::slow_readers::Policy;

mod backlog;
mod worker;

use worker::Worker;

/// The token of the waker: one past any slot.
const WAKE: Token = Token(usize::MAX);

/// What a shard needs to know of the server's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSettings {
    /// When a client is too slow to keep.
    pub policy: Policy,
    /// After our close_notify, how long to wait for the peer to hang up, so
    /// that our last lines are read rather than lost to a TCP reset.
    pub linger: Duration,
}

/// A client's place in its shard, given at registration; the hub addresses
/// the client by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot(u32);

/// Who gets a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// One client.
    One(Slot),
    /// Every client of this shard in the room, maybe but one.
    Room {
        /// The room.
        room: RoomId,
        /// Left out (a notice about someone, to everyone else).
        except: Option<Slot>,
    },
}

/// What a shard is asked to do, in order. The hub, the clients' own
/// threads and the server all write into one inbox per shard, so a client's
/// registration always comes before anything sent about it.
#[derive(Debug)]
pub enum Work {
    /// A client whose handshake is done: from now on only this shard writes
    /// its socket. From the client's thread.
    Register(Slot, Box<Registration>),
    /// A line for one client or a room. From the hub.
    Deliver {
        /// The line, shared.
        line: Outgoing,
        /// Its recipients on this shard.
        to: To,
    },
    /// The client is now in this room (and no other). From the hub.
    Enter(Slot, RoomId),
    /// Send what waits for the client, then close_notify, then close.
    /// The hub's last word about a client, with the chat's reason.
    Close(Slot, CloseReason),
    /// rustls queued something by itself (an alert, a key update): send it.
    /// From the client's thread.
    Flush(Slot),
    /// The client's thread has stopped reading: the peer closed, or the
    /// connection failed. From that thread. The client is let go once both
    /// this and the hub's [`Work::Close`] (or a shutdown) have come, in
    /// either order.
    ReaderDone(Slot),
    /// The server is stopping: close every connection.
    Shutdown,
}

/// What the shard did to a client's connection, for the client's thread.
#[derive(Debug, Default)]
pub struct Fate {
    /// Why the shard cut the connection, if it did; and whether for being
    /// too slow (stalled, lagging, too far behind), which the room is told,
    /// where a failed send is not; and the reason as the metrics count it.
    cut: OnceLock<(String, bool, Disconnect)>,
    /// The hub closed it (its [`Work::Close`] came), and why: whatever the
    /// peer did next, the server ended it.
    closed_by_hub: OnceLock<CloseReason>,
}

impl Fate {
    /// Why the shard cut the connection, if it did: from then on its
    /// thread should relay nothing more.
    pub fn cut_reason(&self) -> Option<&str> {
        self.cut.get().map(|(reason, _, _)| reason.as_str())
    }

    /// Why the shard cut the connection, as the metrics count it.
    pub fn cut_as(&self) -> Option<Disconnect> {
        self.cut.get().map(|&(_, _, counted_as)| counted_as)
    }

    /// True if the cut was for being too slow.
    pub fn too_slow(&self) -> bool {
        self.cut.get().is_some_and(|&(_, too_slow, _)| too_slow)
    }

    /// Why the hub closed the connection, once it has.
    pub fn closed_by_hub(&self) -> Option<CloseReason> {
        self.closed_by_hub.get().copied()
    }

    /// Records the cut. A client is cut once: a second reason is dropped.
    fn set(&self, reason: String, too_slow: bool, disconnect: Disconnect) {
        let _ = self.cut.set((reason, too_slow, disconnect));
    }
}

/// Everything a shard takes over when a client registers.
pub struct Registration {
    /// For the log.
    pub id: ClientId,
    /// For the log.
    pub peer: SocketAddr,
    /// The writing half of the client's TLS connection.
    pub write: WriteHalf,
    /// Where a cut's reason goes, for the client's reading thread.
    pub fate: Arc<Fate>,
    /// Called with the TLS bytes sent when the shard is done with the
    /// connection; what it captures is dropped then.
    pub on_done: Box<dyn FnOnce(u64) + Send>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// A shard's inbox and the state kept with it for whoever writes into it.
struct Inbox {
    work: Vec<Work>,
    /// Slots the shard has finished with, free for new clients.
    free: Vec<u32>,
    /// The next never-used slot.
    next: u32,
    /// The shard is about to sleep, or sleeps: whoever adds work wakes it.
    asleep: bool,
    /// The shard thread has ended: registrations are refused.
    closed: bool,
}

/// The shard has stopped (the server is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardGone;

/// A handle to one shard: hand it work. Cheap to clone.
#[derive(Clone)]
pub struct Shard {
    inbox: Arc<Mutex<Inbox>>,
    /// Wakes the shard's thread from its epoll wait.
    waker: Arc<Waker>,
    /// What the shard's thread counts, for the metrics.
    figures: Arc<ShardFigures>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shard")
    }
}

impl Shard {
    /// What this shard's thread counts.
    pub fn figures(&self) -> Arc<ShardFigures> {
        Arc::clone(&self.figures)
    }

    fn lock(&self) -> MutexGuard<'_, Inbox> {
        // Every change to the inbox is a push or a swap: a panic cannot
        // leave it half done.
        crate::sync::lock(&self.inbox)
    }

    /// Hands the shard a client; returns the slot the hub addresses it by.
    ///
    /// Does not wake the shard: there is nothing to send before the hub
    /// has answered the client, and its answer wakes the shard.
    pub fn register(&self, registration: Registration) -> Result<Slot, ShardGone> {
        let mut inbox = self.lock();
        if inbox.closed {
            return Err(ShardGone);
        }
        let slot = Slot(inbox.free.pop().unwrap_or_else(|| {
            inbox.next += 1;
            inbox.next - 1
        }));
        inbox
            .work
            .push(Work::Register(slot, Box::new(registration)));
        Ok(slot)
    }

    /// Adds one piece of work.
    pub fn send(&self, work: Work) {
        let mut inbox = self.lock();
        inbox.work.push(work);
        self.wake_after(inbox);
    }

    /// Adds a batch of work, leaving `batch` empty: the hub's way, once per
    /// round of events, so that a busy room costs one lock and at most one
    /// wake-up per round, not per line.
    pub fn send_all(&self, batch: &mut Vec<Work>) {
        if batch.is_empty() {
            return;
        }
        let mut inbox = self.lock();
        inbox.work.append(batch);
        self.wake_after(inbox);
    }

    /// Wakes the shard if it sleeps, after the lock is released: a thread
    /// woken while the lock is held would only wait for it.
    fn wake_after(&self, mut inbox: MutexGuard<'_, Inbox>) {
        let asleep = std::mem::take(&mut inbox.asleep);
        drop(inbox);
        if asleep {
            // Fails only if the eventfd cannot be written, which leaves the
            // shard to its next deadline; nothing better can be done here.
            let _ = self.waker.wake();
        }
    }
}

/// Starts shard number `index`.
///
/// If the shard's thread ever panics, its inbox is closed (so that nobody
/// waits on it) and `on_panic` runs: without its writer, a share of the
/// clients would hear nothing, and the server had better stop and say why.
pub fn spawn(
    index: usize,
    settings: ShardSettings,
    budget: Arc<Budget>,
    on_panic: Box<dyn FnOnce() + Send>,
) -> io::Result<(Shard, JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKE)?;
    let shard = Shard {
        inbox: Arc::new(Mutex::new(Inbox {
            work: Vec::new(),
            free: Vec::new(),
            next: 0,
            asleep: false,
            closed: false,
        })),
        waker: Arc::new(waker),
        figures: Arc::default(),
    };
    let handle = shard.clone();
    let guard = PanicGuard {
        shard: shard.clone(),
        on_panic: Some(on_panic),
    };
    let thread = thread::Builder::new()
        .name(format!("writer {index}"))
        .spawn(move || {
            let _guard = guard;
            // Made in its thread: its queues hold `Rc`s, which stay there.
            Worker::new(poll, shard, settings, budget).run()
        })?;
    Ok((handle, thread))
}

/// Closes a shard's inbox and raises the alarm if its thread panics.
struct PanicGuard {
    shard: Shard,
    on_panic: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if thread::panicking() {
            log::error!("a writer thread failed: stopping the server");
            self.shard.lock().closed = true;
            if let Some(on_panic) = self.on_panic.take() {
                on_panic();
            }
        }
    }
}

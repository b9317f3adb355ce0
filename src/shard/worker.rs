//! A shard's thread: one epoll wait for writable sockets, new work and the
//! next deadline; sends that never wait; and the clients it cuts, when the
//! [slow-consumer policy](crate::slow_readers) says so or their socket
//! fails. What each client's lines cost is its [`Backlog`]'s business.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::backlog::{Backlog, Ledger};
use super::{Fate, Registration, Shard, ShardSettings, Slot, To, Work, WAKE};
use crate::budget::{Budget, Outgoing, REFERENCE_COST};
use crate::chat::{ClientId, CloseReason, RoomId};
use crate::duplex::WriteHalf;
use crate::metrics::Disconnect;
use crate::slow_readers::{Policy, Progress, TooSlow, Verdict};

/// Where a client is in its life, as far as sending goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Lines are delivered and sent.
    Open,
    /// Send what waits, then close_notify (`notified` once it is queued).
    Closing { notified: bool },
    /// Our side is closed; waiting up to `until` for the peer to hang up.
    Lingering { until: Instant },
    /// Cut, or the socket failed: nothing more is sent.
    Dead,
}

/// One client, as its shard sees it.
struct Client {
    id: ClientId,
    peer: SocketAddr,
    write: WriteHalf,
    fate: Arc<Fate>,
    on_done: Box<dyn FnOnce(u64) + Send>,
    /// Its lines, and what they cost the budget.
    backlog: Backlog,
    /// How its socket has been taking bytes, for the policy.
    progress: Progress,
    /// In `Worker::watch`.
    watched: bool,
    /// In `Worker::dirty`: set when put there, cleared when flushed.
    dirty: bool,
    /// Its room, and its place in the room's list.
    room: Option<(RoomId, usize)>,
    phase: Phase,
    /// The hub will send nothing more about this client.
    closed_by_hub: bool,
    /// The client's thread will send nothing more either.
    reader_done: bool,
}

impl Client {
    /// When the shard must next look at this client: its linger's end, or,
    /// while its socket is full, when the policy says. `None`: nothing to
    /// look at.
    fn deadline(&self, policy: &Policy) -> Option<Instant> {
        match self.phase {
            Phase::Lingering { until } => Some(until),
            Phase::Dead => None,
            Phase::Open | Phase::Closing { .. } => {
                policy.deadline(&self.progress, self.backlog.oldest_born())
            }
        }
    }

    /// Marks the client for the dirty list: true if it was not on it, and
    /// is to be put there.
    fn enlist(&mut self) -> bool {
        !std::mem::replace(&mut self.dirty, true)
    }
}

/// The clients of a shard, by slot.
#[derive(Default)]
struct Clients(Vec<Option<Client>>);

impl Clients {
    fn get(&mut self, slot: Slot) -> Option<&mut Client> {
        self.0.get_mut(slot.0 as usize)?.as_mut()
    }
}

/// Why a shard cuts a client.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cut {
    /// The slow-consumer policy says so.
    TooSlow(TooSlow),
    /// The socket failed.
    Failed(String),
    /// Our close_notify went out, and the peer did not hang up in time.
    Lingered,
}

/// The shard thread's state.
pub(super) struct Worker {
    poll: Poll,
    shard: Shard,
    settings: ShardSettings,
    budget: Arc<Budget>,
    clients: Clients,
    /// Who of this shard's clients is in each room.
    rooms: HashMap<RoomId, Vec<Slot>>,
    /// Clients to send to at the end of the round, each once (its `dirty`
    /// bit): however many lines or flushes a round brings, one send. One
    /// that is not blocked and has lines waiting is here until sent to.
    dirty: Vec<Slot>,
    /// The round's charges and refunds for references and sealed bytes,
    /// applied to the budget at its end: one change to the shared count
    /// per round instead of one per line and one per send.
    ledger: Ledger,
    /// Clients with a deadline: blocked ones, lingering ones.
    watch: Vec<Slot>,
    /// The earliest deadline among `watch`, or earlier.
    next_check: Option<Instant>,
    /// The server is stopping.
    stopping: bool,
}

impl Worker {
    /// A shard with no clients yet, that waits on `poll` and takes its work
    /// from `shard`'s inbox.
    pub(super) fn new(
        poll: Poll,
        shard: Shard,
        settings: ShardSettings,
        budget: Arc<Budget>,
    ) -> Worker {
        Worker {
            poll,
            shard,
            settings,
            budget,
            clients: Clients::default(),
            rooms: HashMap::new(),
            dirty: Vec::new(),
            ledger: Ledger::default(),
            watch: Vec::new(),
            next_check: None,
            stopping: false,
        }
    }

    /// The shard's loop, until the server stops and every client is let go.
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut work = Vec::new();
        loop {
            self.take_inbox(&mut work);
            for item in work.drain(..) {
                self.handle(item);
            }
            self.flush_dirty();
            if self.next_check.is_some_and(|at| at <= Instant::now()) {
                self.check_deadlines(Instant::now());
            }
            self.settle_budget();
            if self.stopping && self.all_let_go() {
                return;
            }
            if self.going_to_sleep() {
                self.wait(&mut events);
            }
        }
    }

    /// Moves the inbox's work into `work`.
    fn take_inbox(&mut self, work: &mut Vec<Work>) {
        let mut inbox = self.shard.lock();
        std::mem::swap(&mut inbox.work, work);
        inbox.asleep = false;
    }

    fn handle(&mut self, work: Work) {
        match work {
            Work::Register(slot, registration) => self.register(slot, *registration),
            Work::Deliver { line, to } => self.deliver(line, to),
            Work::Enter(slot, room) => self.enter(slot, room),
            Work::Close(slot, why) => self.close(slot, why),
            Work::Flush(slot) => self.mark_dirty(slot),
            Work::ReaderDone(slot) => self.reader_done(slot),
            Work::Shutdown => self.shut_down(),
        }
    }

    /// Queues a line for each of its recipients here, and puts each client
    /// it finds idle on the dirty list.
    fn deliver(&mut self, line: Outgoing, to: To) {
        // Shared among this shard's recipients by a counter only this
        // thread touches (see [`Outgoing`]).
        let line = Rc::new(line);
        let (slots, except) = match &to {
            To::One(slot) => (std::slice::from_ref(slot), None),
            To::Room { room, except } => {
                (self.rooms.get(room).map_or(&[][..], Vec::as_slice), *except)
            }
        };
        let mut over_cap = Vec::new();
        let mut delivered = 0;
        for &slot in slots {
            let Some(client) = self.clients.get(slot) else {
                continue;
            };
            if client.phase != Phase::Open || except == Some(slot) {
                continue;
            }
            // A blocked client is sent to when its socket has room.
            if !client.dirty && !client.progress.is_blocked() {
                client.dirty = true;
                self.dirty.push(slot);
            }
            let pending = client.backlog.push(&line);
            delivered += 1;
            self.ledger.charge += REFERENCE_COST;
            if let Some(why) = self.settings.policy.over_cap(pending) {
                over_cap.push((slot, why));
            }
        }
        // One add per line, not per recipient, none for a line that
        // reached nobody; only this thread writes it.
        if delivered > 0 {
            self.shard.figures.deliveries.add(delivered);
        }
        // Cut once the line reached everyone: a cut changes the room's list.
        for (slot, why) in over_cap {
            self.cut(slot, Cut::TooSlow(why));
        }
    }

    /// Puts a client on the dirty list, unless it is there already.
    fn mark_dirty(&mut self, slot: Slot) {
        if self.clients.get(slot).is_some_and(Client::enlist) {
            self.dirty.push(slot);
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for slot in dirty.drain(..) {
            self.flush(slot);
        }
        // Keep the allocation for the next round.
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Sends what fits and remembers the rest; watches the socket if the
    /// kernel is full, and goes on closing a closing client once nothing
    /// waits for it.
    fn flush(&mut self, slot: Slot) {
        let Some(client) = self.clients.get(slot) else {
            return;
        };
        client.dirty = false;
        if matches!(client.phase, Phase::Lingering { .. } | Phase::Dead) {
            return;
        }
        let blocked = loop {
            let blocked = client.progress.is_blocked();
            let offered = match client.write.offer(&client.backlog.batch(), blocked) {
                Ok(offered) => offered,
                // TLS failed: see `close_after_failure`.
                Err(err) if err.kind() == io::ErrorKind::InvalidData => {
                    return self.close_after_failure(slot);
                }
                Err(err) => return self.cut(slot, Cut::Failed(err.to_string())),
            };
            self.ledger += client.backlog.settle(&offered);
            if offered.blocked {
                client.progress.blocked(Instant::now(), offered.sent > 0);
                break true;
            }
            client.progress.cleared();
            if client.backlog.is_empty() {
                break false;
            }
        };
        if blocked {
            self.watch(slot);
        } else if matches!(client.phase, Phase::Closing { .. }) {
            self.finish_closing(slot);
        }
    }

    /// Applies the round's [`Ledger`] to the budget.
    fn settle_budget(&mut self) {
        let Ledger { charge, refund } = std::mem::take(&mut self.ledger);
        if charge > refund {
            self.budget.charge(charge - refund);
        } else if refund > charge {
            self.budget.refund(refund - charge);
        }
    }

    /// True if the inbox is empty, and marks the shard asleep so that the
    /// next work wakes it; false if there is work to do first.
    fn going_to_sleep(&mut self) -> bool {
        let mut inbox = self.shard.lock();
        if !inbox.work.is_empty() || !self.dirty.is_empty() {
            return false;
        }
        inbox.asleep = true;
        true
    }

    /// Waits for new work, a full socket with room again, or the next
    /// deadline.
    fn wait(&mut self, events: &mut Events) {
        let timeout = self
            .next_check
            .map(|at| at.saturating_duration_since(Instant::now()));
        if let Err(err) = self.poll.poll(events, timeout) {
            if err.kind() != io::ErrorKind::Interrupted {
                log::error!("writer: waiting failed: {err}");
            }
            return;
        }
        // Besides the waker's: sockets the kernel has room for again (or
        // that failed, which the next send finds out).
        for event in events.iter().filter(|event| event.token() != WAKE) {
            let slot = Slot(event.token().0 as u32);
            if self
                .clients
                .get(slot)
                .is_some_and(|c| c.progress.is_blocked())
            {
                self.mark_dirty(slot);
            }
        }
    }

    fn register(&mut self, slot: Slot, registration: Registration) {
        let Registration {
            id,
            peer,
            write,
            fate,
            on_done,
        } = registration;
        let fd = write.as_raw_fd();
        // Edge-triggered: an event comes when a full socket has room again,
        // which is the only time the shard needs to hear of it.
        let registered = self.poll.registry().register(
            &mut SourceFd(&fd),
            Token(slot.0 as usize),
            Interest::WRITABLE,
        );
        let index = slot.0 as usize;
        if self.clients.0.len() <= index {
            self.clients.0.resize_with(index + 1, || None);
        }
        self.clients.0[index] = Some(Client {
            id,
            peer,
            write,
            fate,
            on_done,
            backlog: Backlog::default(),
            progress: Progress::new(Instant::now()),
            watched: false,
            dirty: false,
            room: None,
            phase: Phase::Open,
            closed_by_hub: false,
            reader_done: false,
        });
        if let Err(err) = registered {
            self.cut(slot, Cut::Failed(format!("cannot watch the socket: {err}")));
        } else if self.stopping {
            self.begin_closing(slot);
        }
    }

    fn enter(&mut self, slot: Slot, room: RoomId) {
        if self.clients.get(slot).is_none() {
            return;
        }
        self.leave_room(slot);
        let members = self.rooms.entry(room).or_default();
        let place = members.len();
        members.push(slot);
        if let Some(client) = self.clients.get(slot) {
            client.room = Some((room, place));
        }
    }

    /// Takes the client out of its room's list, in O(1): the last member
    /// takes its place.
    fn leave_room(&mut self, slot: Slot) {
        let Some((room, place)) = self.clients.get(slot).and_then(|c| c.room.take()) else {
            return;
        };
        let Some(members) = self.rooms.get_mut(&room) else {
            return;
        };
        members.swap_remove(place);
        let moved = members.get(place).copied();
        if members.is_empty() {
            self.rooms.remove(&room);
        }
        if let Some(moved) = moved {
            if let Some(client) = self.clients.get(moved) {
                client.room = Some((room, place));
            }
        }
    }

    /// The hub's last word about a client: send what waits, then close.
    fn close(&mut self, slot: Slot, why: CloseReason) {
        if let Some(client) = self.clients.get(slot) {
            client.closed_by_hub = true;
            // Before the close_notify goes: the reader that sees the peer
            // answer it sees this too. Were a second close to come, the first
            // reason stands.
            let _ = client.fate.closed_by_hub.set(why);
            self.leave_room(slot);
            self.begin_closing(slot);
        }
    }

    /// The client's thread has stopped reading.
    fn reader_done(&mut self, slot: Slot) {
        if let Some(client) = self.clients.get(slot) {
            client.reader_done = true;
            if matches!(client.phase, Phase::Lingering { .. }) {
                // The peer hung up after our close_notify: done.
                client.phase = Phase::Dead;
            }
            self.finish_if_done(slot);
        }
    }

    /// The server is stopping: every client is closed.
    fn shut_down(&mut self) {
        self.stopping = true;
        for index in 0..self.clients.0.len() {
            let slot = Slot(index as u32);
            if self.clients.get(slot).is_some() {
                self.leave_room(slot);
                self.begin_closing(slot);
            }
        }
    }

    /// True once every client is let go: then the inbox is closed, unless
    /// work came in (a client registered just now still gets its goodbye).
    /// Decided under the lock, so that no registration slips in between.
    fn all_let_go(&self) -> bool {
        if self.clients.0.iter().any(Option::is_some) {
            return false;
        }
        let mut inbox = self.shard.lock();
        if inbox.work.is_empty() {
            inbox.closed = true;
        }
        inbox.closed
    }

    /// Once nothing waits for a closing client: close_notify, then our half
    /// of TCP, then a moment for the peer to hang up.
    fn finish_closing(&mut self, slot: Slot) {
        let now = Instant::now();
        let linger = self.settings.linger;
        let Some(client) = self.clients.get(slot) else {
            return;
        };
        let Phase::Closing { notified } = client.phase else {
            return;
        };
        if !notified {
            client.phase = Phase::Closing { notified: true };
            match client.write.offer_close() {
                Ok(offered) if offered.blocked => {
                    client.progress.blocked(now, offered.sent > 0);
                    return self.watch(slot);
                }
                Ok(_) => {}
                Err(err) => return self.cut(slot, Cut::Failed(err.to_string())),
            }
        }
        client.write.shutdown_write();
        if client.reader_done {
            // The peer has closed already; nothing is left to wait for.
            client.phase = Phase::Dead;
            self.finish_if_done(slot);
        } else {
            client.phase = Phase::Lingering {
                until: now + linger,
            };
            self.watch(slot);
        }
    }

    /// TLS failed (the peer sent what does not decrypt, or rustls raised an
    /// alert): what waits can never go. The connection closes as after a
    /// goodbye, its alert sent, then our half of TCP, then the linger, but
    /// without close_notify ([`WriteHalf::offer_close`]). A reset now could
    /// reach the peer before the alert, and the peer would never learn why.
    fn close_after_failure(&mut self, slot: Slot) {
        let Some(client) = self.clients.get(slot) else {
            return;
        };
        self.ledger += client.backlog.clear();
        client.phase = Phase::Closing { notified: false };
        self.finish_closing(slot);
    }

    fn begin_closing(&mut self, slot: Slot) {
        let Some(client) = self.clients.get(slot) else {
            return;
        };
        if client.phase == Phase::Open {
            client.phase = Phase::Closing { notified: false };
            if !client.progress.is_blocked() && client.enlist() {
                self.dirty.push(slot);
            }
        }
        self.finish_if_done(slot);
    }

    /// Puts a client on the deadline list, and moves the next check earlier
    /// if its deadline is sooner.
    fn watch(&mut self, slot: Slot) {
        let policy = self.settings.policy;
        let Some(client) = self.clients.get(slot) else {
            return;
        };
        let Some(deadline) = client.deadline(&policy) else {
            return;
        };
        if !client.watched {
            client.watched = true;
            self.watch.push(slot);
        }
        self.next_check = Some(self.next_check.map_or(deadline, |at| at.min(deadline)));
    }

    /// Cuts the clients whose deadline has passed; forgets those that no
    /// longer have one; tries the full sockets the policy says to try, and
    /// cuts those that have stalled.
    fn check_deadlines(&mut self, now: Instant) {
        let policy = self.settings.policy;
        let mut watch = std::mem::take(&mut self.watch);
        let mut next: Option<Instant> = None;
        let mut to_cut = Vec::new();
        let mut to_probe = Vec::new();
        watch.retain(|&slot| {
            let Some(client) = self.clients.get(slot) else {
                return false;
            };
            let verdict = match client.phase {
                Phase::Lingering { until } if until <= now => {
                    to_cut.push((slot, Cut::Lingered));
                    client.watched = false;
                    return false;
                }
                Phase::Lingering { until } => Verdict::Wait(until),
                Phase::Dead => Verdict::Keep,
                Phase::Open | Phase::Closing { .. } => {
                    policy.review(&mut client.progress, client.backlog.oldest_born(), now)
                }
            };
            let at = match verdict {
                Verdict::Keep => {
                    client.watched = false;
                    return false;
                }
                Verdict::Cut(why) => {
                    to_cut.push((slot, Cut::TooSlow(why)));
                    client.watched = false;
                    return false;
                }
                Verdict::Wait(at) => at,
                // Stays on the list, looked at again by the next try at the
                // latest.
                Verdict::Probe(at) => {
                    to_probe.push(slot);
                    at
                }
            };
            next = Some(next.map_or(at, |n| n.min(at)));
            true
        });
        self.watch = watch;
        self.next_check = next;
        for slot in to_probe {
            // A send that moves anything is progress, and restarts the
            // stall clock; one that does not leaves it.
            self.flush(slot);
            let Some(client) = self.clients.get(slot) else {
                continue;
            };
            if let Some(why) = policy.stalled(&client.progress, now) {
                to_cut.push((slot, Cut::TooSlow(why)));
            }
        }
        for (slot, why) in to_cut {
            self.cut(slot, why);
        }
    }

    /// Ends a client's connection: logged with the reason, its lines let
    /// go, its socket reset so that its thread wakes and the kernel frees
    /// what it held.
    fn cut(&mut self, slot: Slot, why: Cut) {
        let Some(client) = self.clients.get(slot) else {
            return;
        };
        if client.phase == Phase::Dead {
            return;
        }
        let reason = match &why {
            Cut::TooSlow(why) => why.to_string(),
            Cut::Failed(err) => format!("connection failed: {err}"),
            Cut::Lingered => "did not hang up after our close_notify".to_string(),
        };
        let too_slow = matches!(why, Cut::TooSlow(_));
        let disconnect = match &why {
            Cut::TooSlow(why) => Disconnect::of_too_slow(why),
            Cut::Failed(_) => Disconnect::SendFailed,
            Cut::Lingered => Disconnect::NoHangup,
        };
        if too_slow {
            log::warn!(
                "{} {}: disconnected, {reason}; {} lines, {} bytes were waiting",
                client.id,
                client.peer,
                client.backlog.len(),
                client.backlog.bytes()
            );
        } else {
            // A peer gone, or one that did not answer our close_notify in
            // time: nothing the operator needs to hear of.
            log::debug!("{} {}: {reason}", client.id, client.peer);
        }
        client.fate.set(reason, too_slow, disconnect);
        client.phase = Phase::Dead;
        client.write.reset();
        self.ledger += client.backlog.clear();
        self.leave_room(slot);
        self.finish_if_done(slot);
    }

    /// Lets go of a client once neither the hub nor its thread will say
    /// anything more about it, and nothing is left to send.
    fn finish_if_done(&mut self, slot: Slot) {
        let stopping = self.stopping;
        let Some(client) = self.clients.get(slot) else {
            return;
        };
        let said_all = (client.closed_by_hub || stopping) && client.reader_done;
        if !said_all || client.phase != Phase::Dead {
            return;
        }
        let client = self.clients.0[slot.0 as usize]
            .take()
            .expect("looked up above");
        // The socket closes when the client's thread drops it too; until
        // then it must not wake this shard under a slot reused by another.
        // Fails only for a socket that was never registered (see
        // `register`): nothing to undo then.
        let fd = client.write.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        // A client is Dead only once cut (which let its lines go) or once
        // everything was sent: nothing it holds counts in the budget.
        debug_assert!(client.backlog.is_settled());
        (client.on_done)(client.write.bytes_sent());
        self.shard.lock().free.push(slot.0);
    }
}

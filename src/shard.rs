//! Writer shards: a few threads that send to every client.
//!
//! Each shard owns some clients. For each it keeps the lines waiting (shared
//! pointers, not copies), and writes by one rule: *send what fits, remember
//! the rest, wait until the kernel has room*. Sends never wait; a full socket
//! is handed to the readiness API (mio, over epoll), and the one wait of a
//! shard wakes for writable sockets, for new work, and for its next deadline.
//! Here too the slow-consumer policy is applied: clients that have stopped
//! reading, or read slower than their room talks, are cut; clients that
//! keep up are never, however far behind a burst leaves them for a while.
//! It knows sockets and rustls, not chat.
//!
//! Next: [`server`](crate::server), which starts the shards, the hub and
//! a thread per client.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::budget::{Budget, Outgoing, LINE_OVERHEAD, REFERENCE_COST};
use crate::chat::{ClientId, RoomId};
use crate::duplex::WriteHalf;

/// Default for how long a client's socket may take nothing, while lines
/// wait for it, before the client is cut as stalled.
///
/// The kernel already holds up to 128 KiB unsent for each socket
/// ([`UNSENT_LIMIT`]), besides what the peer's receive buffer took; when
/// that is full and five more seconds pass without a byte taken (the shard
/// probes the socket meanwhile), the peer is not reading. A reader that
/// pauses for a second or two is not cut.
///
/// [`UNSENT_LIMIT`]: crate::server::UNSENT_LIMIT
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Default for how old the oldest line waiting for a client may get before
/// the client is cut as too far behind.
///
/// A reader that takes bytes, but slower than the room talks, falls further
/// behind for ever; half a minute behind, a chat is no longer a
/// conversation, and the client is better off reconnecting.
pub const MAX_LAG: Duration = Duration::from_secs(30);

/// Default for the bytes that may wait for one client (its lines as the
/// budget counts them, plus a pointer per line) before it is cut, whatever
/// its socket does.
///
/// Half the default memory budget: one client alone can never bring the
/// whole server to a stop.
pub const MAX_PENDING: usize = 128 * 1024 * 1024;

/// How soon after a socket is found full it is first tried again (see
/// [`Worker::check_deadlines`]); after that, every quarter of the stall
/// timeout.
const FIRST_PROBE: Duration = Duration::from_millis(100);

/// Plaintext offered to rustls per send: four full records. Bigger batches
/// save little, since the per-send cost is already shared by hundreds of
/// short lines; smaller ones would cost a system call each.
const CHUNK: usize = 64 * 1024;

/// Lines offered per send, at most: `IoSlice`s are built for each send.
const MAX_SLICES: usize = 1024;

/// The token of the waker: one past any slot.
const WAKE: Token = Token(usize::MAX);

/// What a shard needs to know of the server's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSettings {
    /// See [`STALL_TIMEOUT`].
    pub stall_timeout: Duration,
    /// See [`MAX_LAG`].
    pub max_lag: Duration,
    /// See [`MAX_PENDING`].
    pub max_pending: usize,
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
    /// The hub's last word about a client.
    Close(Slot),
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
    /// Why the shard cut the connection, if it did.
    cut: OnceLock<String>,
    /// The cut was for being too slow (stalled, lagging, too far behind),
    /// which the room is told; a failed send is not.
    too_slow: AtomicBool,
}

impl Fate {
    /// Why the shard cut the connection, if it did: from then on its
    /// thread should relay nothing more.
    pub fn cut_reason(&self) -> Option<&str> {
        self.cut.get().map(String::as_str)
    }

    /// True if the cut was for being too slow.
    pub fn too_slow(&self) -> bool {
        self.too_slow.load(Ordering::SeqCst)
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

/// A shard's inbox and the state shared with whoever writes into it.
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

struct Shared {
    inbox: Mutex<Inbox>,
    waker: Waker,
}

/// The shard has stopped (the server is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardGone;

/// A handle to one shard: hand it work. Cheap to clone.
#[derive(Clone)]
pub struct Shard {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shard")
    }
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        // Every change to the inbox is a push or a swap: a panic cannot
        // leave it half done.
        self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner())
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
        let wake = std::mem::take(&mut inbox.asleep);
        drop(inbox);
        if wake {
            // Fails only if the eventfd cannot be written, which leaves the
            // shard to its next deadline; nothing better can be done here.
            let _ = self.shared.waker.wake();
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
    let shared = Arc::new(Shared {
        inbox: Mutex::new(Inbox {
            work: Vec::new(),
            free: Vec::new(),
            next: 0,
            asleep: false,
            closed: false,
        }),
        waker,
    });
    let handle = Shard {
        shared: Arc::clone(&shared),
    };
    let shard = Shard { shared };
    let guard = PanicGuard {
        shard: shard.clone(),
        on_panic: Some(on_panic),
    };
    let thread = thread::Builder::new()
        .name(format!("writer {index}"))
        .spawn(move || {
            let _guard = guard;
            // Made in its thread: its queues hold `Rc`s, which stay there.
            let worker = Worker {
                poll,
                shard,
                settings,
                budget,
                clients: Vec::new(),
                rooms: HashMap::new(),
                dirty: Vec::new(),
                watch: Vec::new(),
                next_check: None,
                freed: Vec::new(),
                live: 0,
                stopping: false,
            };
            worker.run()
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
    on_done: Option<Box<dyn FnOnce(u64) + Send>>,
    /// Lines not yet encrypted, oldest first.
    pending: VecDeque<Rc<Outgoing>>,
    /// How much of the first pending line rustls has already taken.
    offset: usize,
    /// What `pending` would pin if nobody else shared its lines (see
    /// [`line_cost`]).
    pending_bytes: usize,
    /// Plaintext bytes encrypted for this client that rustls still holds,
    /// unsent: charged to the budget until the socket has taken them all.
    sealed_unsent: usize,
    /// When the oldest line already encrypted, but not yet all in the
    /// kernel, was made.
    in_flight_born: Option<Instant>,
    /// Since when the kernel has refused everything we had for it.
    blocked_since: Option<Instant>,
    /// When to try the full socket again, whatever epoll says.
    next_probe: Instant,
    /// In `Worker::watch`.
    watched: bool,
    /// In `Worker::dirty`.
    dirty: bool,
    room: Option<(RoomId, usize)>,
    phase: Phase,
    /// The hub will send nothing more about this client.
    closed_by_hub: bool,
    /// The client's thread will send nothing more either.
    reader_done: bool,
}

impl Client {
    /// When the oldest line still waiting for this client was made.
    fn oldest_born(&self) -> Option<Instant> {
        self.in_flight_born
            .or_else(|| self.pending.front().map(|line| line.born()))
    }

    /// How long ago the oldest line still waiting for this client was made.
    fn lag(&self, now: Instant) -> Duration {
        self.oldest_born()
            .map_or(Duration::ZERO, |born| now.saturating_duration_since(born))
    }

    /// The kernel refused some of what we had; `moved` says whether this
    /// send got anything through, which restarts the stall clock.
    fn note_blocked(&mut self, now: Instant, moved: bool) {
        if self.blocked_since.is_none() {
            self.next_probe = now + FIRST_PROBE;
        }
        if moved || self.blocked_since.is_none() {
            self.blocked_since = Some(now);
        }
    }

    /// When the shard must next look at this client: its linger's end, or,
    /// while its socket is full, the next try, its stall or its lag
    /// deadline, whichever comes first. `None`: nothing to look at.
    fn deadline(&self, settings: &ShardSettings) -> Option<Instant> {
        match self.phase {
            Phase::Lingering { until } => Some(until),
            Phase::Dead => None,
            Phase::Open | Phase::Closing { .. } => {
                let since = self.blocked_since?;
                let mut at = (since + settings.stall_timeout).min(self.next_probe);
                if let Some(born) = self.oldest_born() {
                    at = at.min(born + settings.max_lag);
                }
                Some(at)
            }
        }
    }
}

/// What one waiting line costs a client: its text and bookkeeping, as the
/// budget counts them, and the pointer in the client's queue. The cap on a
/// client counts in these units, so that a client whose lines nobody else
/// shares reaches the cap before it can take more of the budget.
fn line_cost(line: &Outgoing) -> usize {
    line.text().len() + LINE_OVERHEAD + REFERENCE_COST
}

/// What [`Worker::push`] did.
enum Pushed {
    /// Nothing: the client is gone or closing.
    No,
    /// Queued.
    Yes,
    /// Queued, and now more waits for it than the per-client cap allows.
    OverCap,
}

/// Why a shard cuts a client.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cut {
    /// Its socket took nothing for the stall timeout.
    Stalled(Duration),
    /// The oldest line waiting for it is older than the lag limit.
    Lagging(Duration),
    /// More than the per-client cap waits for it.
    TooFarBehind(usize),
    /// The socket failed.
    Failed(String),
    /// Our close_notify went out, and the peer did not hang up in time.
    Lingered,
}

/// The shard thread's state.
struct Worker {
    poll: Poll,
    shard: Shard,
    settings: ShardSettings,
    budget: Arc<Budget>,
    /// By slot.
    clients: Vec<Option<Client>>,
    /// Who of this shard's clients is in each room.
    rooms: HashMap<RoomId, Vec<Slot>>,
    /// Clients with new lines to send, each once.
    dirty: Vec<Slot>,
    /// Clients with a deadline: blocked ones, lingering ones.
    watch: Vec<Slot>,
    /// The earliest deadline among `watch`, or earlier.
    next_check: Option<Instant>,
    /// Slots finished with, to be handed back through the inbox.
    freed: Vec<u32>,
    /// Clients registered and not yet finished with.
    live: usize,
    /// The server is stopping.
    stopping: bool,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut work = Vec::new();
        loop {
            self.take_inbox(&mut work);
            for item in work.drain(..) {
                self.handle(item);
            }
            self.flush_dirty();
            let now = Instant::now();
            if self.next_check.is_some_and(|at| at <= now) {
                self.check_deadlines(now);
            }
            if self.stopping && self.live == 0 && self.close_inbox_if_empty() {
                return;
            }
            if !self.going_to_sleep() {
                continue;
            }
            let timeout = self
                .next_check
                .map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() != io::ErrorKind::Interrupted {
                    log::error!("writer: waiting failed: {err}");
                }
                continue;
            }
            for event in events.iter() {
                let token = event.token();
                if token == WAKE {
                    continue;
                }
                // A socket the kernel has room for again (or that failed,
                // which the next send finds out).
                let slot = Slot(token.0 as u32);
                if self.client(slot).is_some_and(|c| c.blocked_since.is_some()) {
                    self.mark_dirty(slot);
                }
            }
        }
    }

    /// Refuses registrations from now on, if nothing waits in the inbox
    /// (a client registered just now still gets its goodbye). Decided
    /// under the lock, so that no registration slips in between.
    fn close_inbox_if_empty(&self) -> bool {
        let mut inbox = self.shard.lock();
        if inbox.work.is_empty() {
            inbox.closed = true;
        }
        inbox.closed
    }

    /// Moves the inbox's work into `work`, and hands back freed slots.
    fn take_inbox(&mut self, work: &mut Vec<Work>) {
        let mut inbox = self.shard.lock();
        std::mem::swap(&mut inbox.work, work);
        inbox.free.append(&mut self.freed);
        inbox.asleep = false;
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

    fn client(&mut self, slot: Slot) -> Option<&mut Client> {
        self.clients.get_mut(slot.0 as usize)?.as_mut()
    }

    fn handle(&mut self, work: Work) {
        match work {
            Work::Register(slot, registration) => self.register(slot, *registration),
            Work::Deliver { line, to } => self.deliver(line, to),
            Work::Enter(slot, room) => self.enter(slot, room),
            Work::Close(slot) => {
                if let Some(client) = self.client(slot) {
                    client.closed_by_hub = true;
                    self.leave_room(slot);
                    self.begin_closing(slot);
                }
            }
            Work::Flush(slot) => self.mark_dirty(slot),
            Work::ReaderDone(slot) => {
                if let Some(client) = self.client(slot) {
                    client.reader_done = true;
                    if matches!(client.phase, Phase::Lingering { .. }) {
                        // The peer hung up after our close_notify: done.
                        client.phase = Phase::Dead;
                    }
                    self.finish_if_done(slot);
                }
            }
            Work::Shutdown => {
                self.stopping = true;
                for index in 0..self.clients.len() {
                    let slot = Slot(index as u32);
                    if self.client(slot).is_some() {
                        self.leave_room(slot);
                        self.begin_closing(slot);
                    }
                }
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
        if self.clients.len() <= index {
            self.clients.resize_with(index + 1, || None);
        }
        self.clients[index] = Some(Client {
            id,
            peer,
            write,
            fate,
            on_done: Some(on_done),
            pending: VecDeque::new(),
            offset: 0,
            pending_bytes: 0,
            sealed_unsent: 0,
            in_flight_born: None,
            blocked_since: None,
            next_probe: Instant::now(),
            watched: false,
            dirty: false,
            room: None,
            phase: Phase::Open,
            closed_by_hub: false,
            reader_done: false,
        });
        self.live += 1;
        if let Err(err) = registered {
            self.cut(slot, Cut::Failed(format!("cannot watch the socket: {err}")));
        } else if self.stopping {
            self.begin_closing(slot);
        }
    }

    fn deliver(&mut self, line: Outgoing, to: To) {
        // Shared among this shard's recipients by a counter only this
        // thread touches (see [`Outgoing`]).
        let line = Rc::new(line);
        let mut pushed = 0;
        let mut over_cap = Vec::new();
        let mut push = |worker: &mut Worker, slot: Slot| match worker.push(slot, &line) {
            Pushed::No => {}
            Pushed::Yes => pushed += 1,
            Pushed::OverCap => {
                pushed += 1;
                over_cap.push(slot);
            }
        };
        match to {
            To::One(slot) => push(self, slot),
            To::Room { room, except } => {
                // Taken out of the map while its members are pushed to, and
                // put back before anyone is cut (which changes the list).
                let Some(members) = self.rooms.remove(&room) else {
                    return;
                };
                for &slot in &members {
                    if Some(slot) != except {
                        push(self, slot);
                    }
                }
                self.rooms.insert(room, members);
            }
        }
        // One atomic add per line, not per recipient.
        self.budget.charge(pushed * REFERENCE_COST);
        for slot in over_cap {
            let bytes = self.client(slot).map_or(0, |c| c.pending_bytes);
            self.cut(slot, Cut::TooFarBehind(bytes));
        }
    }

    /// Queues a line for one client, and notes that it has something to
    /// send. The caller charges the budget for the reference.
    fn push(&mut self, slot: Slot, line: &Rc<Outgoing>) -> Pushed {
        let cap = self.settings.max_pending;
        let Some(client) = self.client(slot) else {
            return Pushed::No;
        };
        if client.phase != Phase::Open {
            return Pushed::No;
        }
        client.pending.push_back(Rc::clone(line));
        client.pending_bytes += line_cost(line);
        if client.pending_bytes > cap {
            return Pushed::OverCap;
        }
        // A blocked client is sent to when its socket has room.
        if client.blocked_since.is_none() {
            self.mark_dirty(slot);
        }
        Pushed::Yes
    }

    fn enter(&mut self, slot: Slot, room: RoomId) {
        if self.client(slot).is_none() {
            return;
        }
        self.leave_room(slot);
        let members = self.rooms.entry(room).or_default();
        let place = members.len();
        members.push(slot);
        if let Some(client) = self.client(slot) {
            client.room = Some((room, place));
        }
    }

    /// Takes the client out of its room's list, in O(1): the last member
    /// takes its place.
    fn leave_room(&mut self, slot: Slot) {
        let Some((room, place)) = self.client(slot).and_then(|c| c.room.take()) else {
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
            if let Some(client) = self.client(moved) {
                client.room = Some((room, place));
            }
        }
    }

    fn mark_dirty(&mut self, slot: Slot) {
        if let Some(client) = self.client(slot) {
            if !client.dirty {
                client.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for slot in dirty.drain(..) {
            if let Some(client) = self.client(slot) {
                client.dirty = false;
                self.flush(slot);
            }
        }
        // Keep the allocation for the next round.
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Sends what fits; remembers the rest; and once nothing waits, moves
    /// a closing client on to close_notify.
    fn flush(&mut self, slot: Slot) {
        let now = Instant::now();
        let Some(client) = self.client(slot) else {
            return;
        };
        if matches!(client.phase, Phase::Lingering { .. } | Phase::Dead) {
            return;
        }
        let (mut charge, mut refund) = (0, 0);
        let outcome = loop {
            let offered = {
                let mut slices = Vec::with_capacity(client.pending.len().min(MAX_SLICES));
                let mut bytes = 0;
                for (i, line) in client.pending.iter().enumerate() {
                    let text = if i == 0 {
                        &line.text().as_bytes()[client.offset..]
                    } else {
                        line.text().as_bytes()
                    };
                    slices.push(IoSlice::new(text));
                    bytes += text.len();
                    if bytes >= CHUNK || slices.len() == MAX_SLICES {
                        break;
                    }
                }
                client.write.offer(&slices, client.blocked_since.is_some())
            };
            let offered = match offered {
                Ok(offered) => offered,
                Err(err) => break Err(err),
            };
            let first_born = client.pending.front().map(|line| line.born());
            // Whole lines encrypted leave the queue; a line cut in two by
            // rustls' buffer limit stays, with how much of it is gone.
            let mut taken = offered.taken;
            while taken > 0 {
                let front = client
                    .pending
                    .front()
                    .expect("rustls took no more than offered");
                let left = front.text().len() - client.offset;
                if taken < left {
                    client.offset += taken;
                    break;
                }
                taken -= left;
                client.offset = 0;
                let line = client.pending.pop_front().expect("just looked");
                client.pending_bytes -= line_cost(&line);
                refund += REFERENCE_COST;
            }
            if offered.blocked {
                if offered.taken > 0 {
                    client.in_flight_born = first_born;
                }
                // Encrypted but not yet taken by the kernel: still memory
                // of ours. What rustls holds is what it held, plus what it
                // sealed now, less what it sent (counted at the size of the
                // text: records add a few bytes of framing each).
                let held = (client.sealed_unsent + offered.taken).saturating_sub(offered.sent);
                if held > client.sealed_unsent {
                    charge += held - client.sealed_unsent;
                } else {
                    refund += client.sealed_unsent - held;
                }
                client.sealed_unsent = held;
                client.note_blocked(now, offered.sent > 0);
                break Ok(true);
            }
            client.in_flight_born = None;
            client.blocked_since = None;
            refund += std::mem::take(&mut client.sealed_unsent);
            if client.pending.is_empty() {
                break Ok(false);
            }
        };
        if client.pending.is_empty() && client.pending.capacity() > 64 {
            // Give back what a burst made large.
            client.pending.shrink_to(64);
        }
        self.budget.charge(charge);
        self.budget.refund(refund);
        match outcome {
            Err(err) => self.cut(slot, Cut::Failed(err.to_string())),
            Ok(true) => self.watch(slot),
            Ok(false) => self.close_if_closing(slot, now),
        }
    }

    /// Once nothing waits for a closing client: close_notify, then our half
    /// of TCP, then a moment for the peer to hang up.
    fn close_if_closing(&mut self, slot: Slot, now: Instant) {
        let linger = self.settings.linger;
        let Some(client) = self.client(slot) else {
            return;
        };
        let Phase::Closing { notified } = client.phase else {
            return;
        };
        if !notified {
            client.phase = Phase::Closing { notified: true };
            match client.write.offer_close() {
                Ok(offered) if offered.blocked => {
                    client.note_blocked(now, offered.sent > 0);
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

    fn begin_closing(&mut self, slot: Slot) {
        let Some(client) = self.client(slot) else {
            return;
        };
        if client.phase == Phase::Open {
            client.phase = Phase::Closing { notified: false };
            if client.blocked_since.is_none() {
                self.mark_dirty(slot);
            }
        }
        self.finish_if_done(slot);
    }

    /// Puts a client on the deadline list, and moves the next check earlier
    /// if its deadline is sooner.
    fn watch(&mut self, slot: Slot) {
        let settings = self.settings;
        let Some(client) = self.client(slot) else {
            return;
        };
        let Some(deadline) = client.deadline(&settings) else {
            return;
        };
        if !client.watched {
            client.watched = true;
            self.watch.push(slot);
        }
        self.next_check = Some(self.next_check.map_or(deadline, |at| at.min(deadline)));
    }

    /// Cuts the clients whose deadline has passed; forgets those that no
    /// longer have one.
    ///
    /// A full socket is also tried again now and then: the kernel reports
    /// room only once half of what it may hold unsent ([`UNSENT_LIMIT`])
    /// has gone, so a peer that reads a few KB a second takes bytes without
    /// a word from epoll. A client is stalled when no try has moved a byte
    /// for the stall timeout.
    ///
    /// [`UNSENT_LIMIT`]: crate::server::UNSENT_LIMIT
    fn check_deadlines(&mut self, now: Instant) {
        let settings = self.settings;
        let probe_every = (settings.stall_timeout / 4).max(FIRST_PROBE);
        let mut watch = std::mem::take(&mut self.watch);
        let mut next: Option<Instant> = None;
        let mut to_cut = Vec::new();
        let mut to_probe = Vec::new();
        watch.retain(|&slot| {
            let Some(client) = self
                .clients
                .get_mut(slot.0 as usize)
                .and_then(Option::as_mut)
            else {
                return false;
            };
            let Some(mut at) = client.deadline(&settings) else {
                client.watched = false;
                return false;
            };
            if at <= now {
                if let Phase::Lingering { .. } = client.phase {
                    to_cut.push((slot, Cut::Lingered));
                    client.watched = false;
                    return false;
                }
                let lag = client.lag(now);
                if lag >= settings.max_lag {
                    to_cut.push((slot, Cut::Lagging(lag)));
                    client.watched = false;
                    return false;
                }
                // A try is due, or the stall deadline: tried below, and
                // cut there if nothing moves. It stays on the list, looked
                // at again by the next try at the latest (its stall
                // deadline may be past already; that try decides).
                to_probe.push(slot);
                client.next_probe = now + probe_every;
                at = client.next_probe;
            }
            next = Some(next.map_or(at, |n| n.min(at)));
            true
        });
        self.watch = watch;
        self.next_check = next;
        for slot in to_probe {
            // A send that moves anything is progress, and moves
            // `blocked_since` on; one that does not leaves it.
            self.flush(slot);
            let Some(client) = self.client(slot) else {
                continue;
            };
            if let Some(since) = client.blocked_since {
                let stalled = now.saturating_duration_since(since);
                if stalled >= settings.stall_timeout {
                    to_cut.push((slot, Cut::Stalled(stalled)));
                }
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
        let settings = self.settings;
        let budget = Arc::clone(&self.budget);
        let Some(client) = self.client(slot) else {
            return;
        };
        if client.phase == Phase::Dead {
            return;
        }
        let waiting = (client.pending.len(), client.pending_bytes);
        let reason = match &why {
            Cut::Stalled(for_how_long) => format!(
                "stalled: its connection took nothing for {:.1} s (--stall-timeout {} s)",
                for_how_long.as_secs_f32(),
                settings.stall_timeout.as_secs_f32()
            ),
            Cut::Lagging(lag) => format!(
                "too slow: {:.1} s behind the room (--max-lag {} s)",
                lag.as_secs_f32(),
                settings.max_lag.as_secs_f32()
            ),
            Cut::TooFarBehind(bytes) => format!(
                "too slow: {bytes} bytes waiting for it (--max-pending {})",
                settings.max_pending
            ),
            Cut::Failed(err) => format!("connection failed: {err}"),
            Cut::Lingered => "did not hang up after our close_notify".to_string(),
        };
        let too_slow = matches!(
            why,
            Cut::Stalled(_) | Cut::Lagging(_) | Cut::TooFarBehind(_)
        );
        if too_slow {
            log::warn!(
                "{} {}: disconnected, {reason}; {} lines, {} bytes were waiting",
                client.id,
                client.peer,
                waiting.0,
                waiting.1
            );
        } else {
            // A peer gone, or one that did not answer our close_notify in
            // time: nothing the operator needs to hear of.
            log::debug!("{} {}: {reason}", client.id, client.peer);
        }
        client.fate.too_slow.store(too_slow, Ordering::SeqCst);
        // Set last, so that a thread that sees the reason sees the rest.
        let _ = client.fate.cut.set(reason);
        client.phase = Phase::Dead;
        client.write.reset();
        let refund =
            client.pending.len() * REFERENCE_COST + std::mem::take(&mut client.sealed_unsent);
        client.pending = VecDeque::new();
        client.pending_bytes = 0;
        client.offset = 0;
        budget.refund(refund);
        self.leave_room(slot);
        self.finish_if_done(slot);
    }

    /// Lets go of a client once neither the hub nor its thread will say
    /// anything more about it, and nothing is left to send.
    fn finish_if_done(&mut self, slot: Slot) {
        let stopping = self.stopping;
        let Some(client) = self.client(slot) else {
            return;
        };
        let said_all = (client.closed_by_hub || stopping) && client.reader_done;
        if !said_all || client.phase != Phase::Dead {
            return;
        }
        let mut client = self.clients[slot.0 as usize]
            .take()
            .expect("looked up above");
        // The socket closes when the client's thread drops it too; until
        // then it must not wake this shard under a slot reused by another.
        let fd = client.write.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        // A client is Dead only once cut (which let its lines go) or once
        // everything was sent: nothing it holds counts in the budget.
        debug_assert!(client.pending.is_empty() && client.sealed_unsent == 0);
        if let Some(on_done) = client.on_done.take() {
            on_done(client.write.bytes_sent());
        }
        self.freed.push(slot.0);
        self.live -= 1;
    }
}

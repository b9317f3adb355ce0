//! What survives a restart of a server alone: each room's history and
//! topic, its moderation rules and the server-wide bans, kept in SQLite in
//! a data directory. The hub hands writes to a [`Feed`] and never waits:
//! one thread of the store's own (`writer`) puts them on disk, in the file
//! `db` knows. Not with `--redis`, where Redis keeps the rooms.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::budget::{Budget, LINE_OVERHEAD};
use crate::chat::RoomId;

mod db;
mod writer;

pub use db::DB_FILE;

/// The data directory a server alone uses unless told otherwise: `data`
/// under the directory it runs in, which `make run-server` uses.
pub const DEFAULT_DATA_DIR: &str = "data";

/// Default for [`Retention::days`]: a month of a quiet room's past.
pub const KEEP_DAYS: u32 = 30;

/// Default for [`Retention::room_bytes`]: far more than 50 lines of any
/// length a client may send (4 KiB each), so that by default the number
/// of lines is what bounds a room; the bound is for `--history` set high.
pub const KEEP_ROOM_BYTES: usize = 1 << 20;

/// Changes that may wait for the disk. Past it a line is dropped, not
/// waited for: the hub must never stall the chat on a slow disk, and a
/// lost line of history is a smaller harm than every room going quiet.
/// (A topic, rules or bans are held by the [`Feed`] instead.)
/// At most this many lines of at most `--max-line` bytes (16 MiB at the
/// defaults) count in the memory budget while they wait.
pub const QUEUE_WRITES: usize = 4096;

/// How often the writer forgets what is past the retention.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What the store keeps of each room's past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The last lines of each room (`--history`).
    pub lines: usize,
    /// At most so many bytes of lines per room (`--keep-bytes`).
    pub room_bytes: usize,
    /// Nothing said longer ago than this many days (`--keep-days`).
    pub days: u32,
}

impl Retention {
    /// The oldest time a line may have been said and still be kept, at `now`.
    fn oldest_kept(&self, now: SystemTime) -> i64 {
        let age = Duration::from_secs(u64::from(self.days) * 86_400);
        millis(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH))
    }
}

/// One change to what is kept, to put on disk in the order the hub saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A chat or action line went into a room's history.
    Line {
        /// The room's name as written (kept by its lower case, the room's
        /// key everywhere).
        room: Arc<str>,
        /// The line as its members got it, `\n` included.
        text: Arc<str>,
        /// When it was said.
        at: SystemTime,
    },
    /// A room's topic was set.
    Topic {
        /// The room's name as written.
        room: Arc<str>,
        /// The topic.
        topic: Arc<str>,
    },
    /// A room's moderation rules changed; `None`: it has none any more.
    /// Opaque here: the chat writes and reads the text.
    Rules {
        /// The room's name (or key).
        room: String,
        /// The rules, as the chat wrote them.
        text: Option<String>,
    },
    /// The server-wide bans changed; `None`: there are none. Opaque too.
    ServerBans(Option<String>),
}

impl Change {
    /// What it costs in memory while it waits, for the budget.
    fn cost(&self) -> usize {
        LINE_OVERHEAD
            + match self {
                Change::Line { room, text, .. } => room.len() + text.len(),
                Change::Topic { room, topic } => room.len() + topic.len(),
                Change::Rules { room, text } => room.len() + text.as_ref().map_or(0, String::len),
                Change::ServerBans(text) => text.as_ref().map_or(0, String::len),
            }
    }
}

/// A room as the store gives it back at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SavedRoom {
    /// Its name as it was last written.
    pub name: String,
    /// Its topic, if one was set.
    pub topic: Option<String>,
    /// Its moderation rules, as the chat wrote them.
    pub rules: Option<String>,
    /// Its last lines within the [`Retention`], oldest first.
    pub lines: Vec<Arc<str>>,
}

/// Everything the store gives back at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Loaded {
    /// Every room that keeps something, by name.
    pub rooms: Vec<SavedRoom>,
    /// The server-wide bans, as the chat wrote them.
    pub server_bans: Option<String>,
}

/// What the store's queue holds and what it lost, read by anyone (the
/// metrics); only the feed and the writer change it. `queued` and
/// `queued_bytes` go up and down with the queue; the other counts never go
/// back while the process runs.
#[derive(Debug, Default)]
pub struct StoreCounts {
    /// Changes waiting for the writer.
    pub queued: AtomicUsize,
    /// What they cost in memory (also counted in the budget).
    pub queued_bytes: AtomicUsize,
    /// Lines dropped because the queue was full (and, at the stop, any
    /// change the writer could not take in time).
    pub dropped: AtomicU64,
    /// Changes lost because the disk refused them (full, read-only, failing).
    pub failed: AtomicU64,
    /// Changes on disk.
    pub written: AtomicU64,
}

/// The hub's end of the store: hands each write to the writer, never
/// waiting. The writer ends once this is dropped and it has written what
/// waited.
pub struct Feed {
    writes: Sender<Change>,
    counts: Arc<StoreCounts>,
    budget: Arc<Budget>,
    /// Each room's name, once asked, so that a line costs no new string.
    /// Room numbers are never reused, so an entry never goes stale.
    names: HashMap<RoomId, Arc<str>>,
    /// Whether the log already said that writes are being dropped.
    told_full: bool,
    /// Topics, rules and bans that found the queue full: the latest of
    /// each room's (and the server's) is held here and handed over before
    /// the next write. Unlike a line, a lost one would not be made good by
    /// the next: a ban would be forgotten at the restart.
    held: Vec<Change>,
}

impl fmt::Debug for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feed")
            .field("queued", &self.writes.len())
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// Keeps `text`, said now in `room`; `name` says the room's name the
    /// first time it is needed.
    pub fn line(&mut self, room: RoomId, name: impl FnOnce() -> Option<String>, text: &Arc<str>) {
        let Some(room) = self.name_of(room, name) else {
            return;
        };
        let at = SystemTime::now();
        let text = Arc::clone(text);
        self.save(Change::Line { room, text, at });
    }

    /// Keeps `topic` as `room`'s topic.
    pub fn topic(&mut self, room: RoomId, name: impl FnOnce() -> Option<String>, topic: &Arc<str>) {
        let Some(room) = self.name_of(room, name) else {
            return;
        };
        let topic = Arc::clone(topic);
        self.save(Change::Topic { room, topic });
    }

    /// Nobody here is in `room` any more: its name is let go, and asked
    /// again if it speaks again, so that the names kept here do not grow
    /// with every room the server has seen.
    pub fn forget(&mut self, room: RoomId) {
        self.names.remove(&room);
    }

    fn name_of(&mut self, room: RoomId, name: impl FnOnce() -> Option<String>) -> Option<Arc<str>> {
        if let Some(name) = self.names.get(&room) {
            return Some(Arc::clone(name));
        }
        let name: Arc<str> = name()?.into();
        self.names.insert(room, Arc::clone(&name));
        Some(name)
    }

    /// Hands `write` to the writer, never waiting. If the queue is full, a
    /// line is dropped and counted (the log says so once until the queue
    /// has room again); a topic, rules or bans are held until it has room.
    pub fn save(&mut self, write: Change) {
        if !self.held.is_empty() {
            self.hand_over_held();
            // Behind what is still held, so that an older one never goes
            // after it.
            if !self.held.is_empty() && !matches!(write, Change::Line { .. }) {
                return self.hold(write);
            }
        }
        let Err((write, err)) = self.queue(write) else {
            if self.told_full && self.writes.len() < QUEUE_WRITES / 2 {
                self.told_full = false;
                log::info!("the store keeps up again");
            }
            return;
        };
        let disconnected = matches!(err, TrySendError::Disconnected(()));
        if !disconnected && !matches!(write, Change::Line { .. }) {
            self.hold(write);
            return;
        }
        self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        if !std::mem::replace(&mut self.told_full, true) {
            if disconnected {
                log::error!(
                    "the store's thread has ended: nothing more is kept (the chat goes on)"
                );
            } else {
                log::warn!(
                    "the store's queue is full ({QUEUE_WRITES} writes): the disk is slower \
                     than the chat, and what is said now is not kept (the chat goes on)"
                );
            }
        }
    }

    /// Puts `write` in the queue, counted in the budget and the counts
    /// while it waits; gives it back if the queue is full or closed.
    fn queue(&mut self, write: Change) -> Result<(), (Change, TrySendError<()>)> {
        let cost = write.cost();
        // Counted before it can be written, so the writer's refund never
        // comes first.
        self.count_in(cost);
        self.writes.try_send(write).map_err(|err| {
            self.count_out(cost);
            match err {
                TrySendError::Full(write) => (write, TrySendError::Full(())),
                TrySendError::Disconnected(write) => (write, TrySendError::Disconnected(())),
            }
        })
    }

    /// Counts a write of `cost` as waiting, in the budget and the counts.
    fn count_in(&self, cost: usize) {
        self.budget.charge(cost);
        self.counts.queued.fetch_add(1, Ordering::Relaxed);
        self.counts.queued_bytes.fetch_add(cost, Ordering::Relaxed);
    }

    /// Takes back [`Feed::count_in`] for a write that did not go.
    fn count_out(&self, cost: usize) {
        self.budget.refund(cost);
        self.counts.queued.fetch_sub(1, Ordering::Relaxed);
        self.counts.queued_bytes.fetch_sub(cost, Ordering::Relaxed);
    }

    /// Holds `write` (not a line) for later, in place of an older one of
    /// the same room, or of the server's bans.
    fn hold(&mut self, write: Change) {
        let key = held_key(&write);
        self.held.retain(|older| held_key(older) != key);
        self.held.push(write);
    }

    /// Hands over what was held, oldest first, until the queue is full.
    fn hand_over_held(&mut self) {
        let mut held = std::mem::take(&mut self.held).into_iter();
        for write in held.by_ref() {
            if let Err((write, _)) = self.queue(write) {
                self.held.push(write);
                break;
            }
        }
        self.held.extend(held);
    }
}

/// What a held write replaces: the same kind for the same room (or the
/// server's bans).
fn held_key(write: &Change) -> (u8, String) {
    match write {
        Change::Line { room, .. } => (0, room.to_ascii_lowercase()),
        Change::Topic { room, .. } => (1, room.to_ascii_lowercase()),
        Change::Rules { room, .. } => (2, room.to_ascii_lowercase()),
        Change::ServerBans(_) => (3, String::new()),
    }
}

/// How long the feed's last hand-over may wait for room in the queue, at
/// shutdown, for what it still holds.
const HELD_AT_STOP: Duration = Duration::from_millis(200);

impl Drop for Feed {
    fn drop(&mut self) {
        // The hub is stopping: a short wait for the writer is allowed now.
        for write in std::mem::take(&mut self.held) {
            let cost = write.cost();
            self.count_in(cost);
            if self.writes.send_timeout(write, HELD_AT_STOP).is_err() {
                self.count_out(cost);
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                log::warn!("the store could not take a topic or rules in time; it was not kept");
            }
        }
    }
}

/// An opened store: its directory locked, what it gave back read; its
/// writer not yet started ([`Opened::start`]).
pub struct Opened {
    /// The rooms and bans as they were at the last stop.
    pub loaded: Loaded,
    counts: Arc<StoreCounts>,
    conn: rusqlite::Connection,
    lock: std::fs::File,
    retention: Retention,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("rooms", &self.loaded.rooms.len())
            .finish_non_exhaustive()
    }
}

impl Opened {
    /// The queue's length and losses, for the metrics: they count from
    /// the start.
    pub fn counts(&self) -> Arc<StoreCounts> {
        Arc::clone(&self.counts)
    }

    /// Starts the writer; what waits in its queue counts in `budget`.
    /// Returns what the hub gets, and the writer.
    pub fn start(self, budget: &Arc<Budget>) -> io::Result<(Kept, Writing)> {
        let (writes, queue) = crossbeam_channel::bounded(QUEUE_WRITES);
        let (alive, done) = crossbeam_channel::bounded(0);
        let thread = writer::spawn(
            self.conn,
            self.lock,
            queue,
            self.retention,
            Arc::clone(&self.counts),
            Arc::clone(budget),
            alive,
        )?;
        let feed = Feed {
            writes,
            counts: self.counts,
            budget: Arc::clone(budget),
            names: HashMap::new(),
            told_full: false,
            held: Vec::new(),
        };
        let kept = Kept {
            feed,
            loaded: self.loaded,
        };
        Ok((kept, Writing { thread, done }))
    }
}

/// What the hub gets of a started store: what was kept, to give back to
/// the chat before the first event, and the feed for what is kept from
/// then on.
#[derive(Debug)]
pub struct Kept {
    /// The hub's end of the queue.
    pub feed: Feed,
    /// The rooms and bans as they were at the last stop.
    pub loaded: Loaded,
}

/// The writer thread, running: it ends once the [`Feed`] is dropped and
/// what waited is written.
#[derive(Debug)]
pub struct Writing {
    thread: JoinHandle<()>,
    /// Disconnected when the writer ends, however it ends.
    done: Receiver<()>,
}

impl Writing {
    /// Waits at most `limit` for the writer to end; true if it ended
    /// without panicking.
    pub fn finish(self, limit: Duration) -> bool {
        match self.done.recv_timeout(limit) {
            Err(RecvTimeoutError::Disconnected) => self.thread.join().is_ok(),
            Ok(()) | Err(RecvTimeoutError::Timeout) => false,
        }
    }
}

/// Why the store refused to start: the server must not start either,
/// or it would silently lose or replace what was kept.
#[derive(Debug)]
pub enum StoreError {
    /// Another process holds the data directory's lock.
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
    /// The database file is not one SQLite can read whole.
    Damaged {
        /// The file.
        file: PathBuf,
        /// What SQLite said.
        why: String,
    },
    /// The file was written by a newer version of the server.
    TooNew {
        /// The file.
        file: PathBuf,
        /// Its schema version.
        version: i64,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Locked { dir } => write!(
                f,
                "the data directory {} is in use by another chat-server (it holds the \
                 lock on {}); give each server a directory of its own (--data-dir), \
                 or stop the other",
                dir.display(),
                dir.join(writer::LOCK_FILE).display()
            ),
            StoreError::Damaged { file, why } => {
                let file = file.display();
                write!(
                    f,
                    "{file} is damaged ({why}); it was left as it is. To save what it \
                     holds: sqlite3 {file} .recover | sqlite3 {file}.recovered, then \
                     move {file}.recovered to {file} (and remove {file}-wal and \
                     {file}-shm); or move it aside to start with an empty store"
                )
            }
            StoreError::TooNew { file, version } => write!(
                f,
                "{} has version {version}, made by a newer chat-server; this one \
                 knows version {}",
                file.display(),
                db::VERSION
            ),
        }
    }
}

impl std::error::Error for StoreError {}

/// Opens the store in `dir` (made if missing), takes its lock and reads
/// what it keeps. `Ok(None)` when the directory or the file cannot be
/// written (read-only, full): the log says so once, and the chat goes on
/// in memory. Refuses a damaged file, or a directory another server uses.
pub fn open(dir: &Path, retention: Retention) -> Result<Option<Opened>, StoreError> {
    let Some((lock, conn)) = writer::prepare(dir)? else {
        return Ok(None);
    };
    let loaded = match db::load(&conn, &retention, SystemTime::now()) {
        Ok(loaded) => loaded,
        Err(err) => return Err(db::refusal(dir, err)),
    };
    log::info!(
        "store {}: rooms kept: {}",
        dir.join(DB_FILE).display(),
        loaded.rooms.len()
    );
    Ok(Some(Opened {
        loaded,
        counts: Arc::default(),
        conn,
        lock,
        retention,
    }))
}

/// Milliseconds since the Unix epoch: how the file keeps times.
fn millis(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slow_readers::Policy;

    #[test]
    fn a_full_queue_drops_and_counts_and_the_budget_counts_what_waits() {
        let budget = Budget::new(&Policy::default());
        let (writes, queue) = crossbeam_channel::bounded(2);
        let counts = Arc::new(StoreCounts::default());
        let mut feed = Feed {
            writes,
            counts: Arc::clone(&counts),
            budget: Arc::clone(&budget),
            names: HashMap::new(),
            told_full: false,
            held: Vec::new(),
        };
        let mut asked = 0;
        let mut name = || {
            asked += 1;
            Some("#Tea".to_string())
        };
        let text: Arc<str> = "chat a hi\n".into();
        feed.line(RoomId(7), &mut name, &text);
        feed.line(RoomId(7), &mut name, &text);
        feed.line(RoomId(7), &mut name, &text);
        assert_eq!(asked, 1, "the room's name is asked once");
        let cost = LINE_OVERHEAD + "#Tea".len() + text.len();
        assert_eq!(budget.used(), 2 * cost);
        assert_eq!(counts.queued.load(Ordering::Relaxed), 2);
        assert_eq!(counts.queued_bytes.load(Ordering::Relaxed), 2 * cost);
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 1);
        match queue.try_recv() {
            Ok(Change::Line { room, text, .. }) => {
                assert_eq!((&*room, &*text), ("#Tea", "chat a hi\n"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_topic_rules_or_bans_that_find_the_queue_full_are_held_not_dropped() {
        let budget = Budget::new(&Policy::default());
        let (writes, queue) = crossbeam_channel::bounded(1);
        let counts = Arc::new(StoreCounts::default());
        let mut feed = Feed {
            writes,
            counts: Arc::clone(&counts),
            budget: Arc::clone(&budget),
            names: HashMap::new(),
            told_full: false,
            held: Vec::new(),
        };
        let rules = |text: &str| Change::Rules {
            room: "#Tea".into(),
            text: Some(text.into()),
        };
        feed.save(Change::ServerBans(Some("first".into())));
        feed.save(rules("old"));
        feed.save(rules("new"));
        feed.save(Change::ServerBans(None));
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(feed.held, [rules("new"), Change::ServerBans(None)]);
        assert_eq!(
            queue.try_recv().ok(),
            Some(Change::ServerBans(Some("first".into())))
        );
        // The next write hands over what was held first, as room allows.
        let text: Arc<str> = "chat a hi\n".into();
        feed.line(RoomId(1), || Some("#Tea".into()), &text);
        assert_eq!(queue.try_recv().ok(), Some(rules("new")));
        assert_eq!(
            counts.dropped.load(Ordering::Relaxed),
            1,
            "the line found no room"
        );
        assert_eq!(feed.held, [Change::ServerBans(None)]);
        // What is still held goes when the feed is dropped, if the writer
        // takes it in time.
        drop(feed);
        assert_eq!(queue.try_recv().ok(), Some(Change::ServerBans(None)));
        // Nobody wrote what was taken here: each still counts, once.
        let taken = [
            Change::ServerBans(Some("first".into())),
            rules("new"),
            Change::ServerBans(None),
        ];
        assert_eq!(budget.used(), taken.iter().map(Change::cost).sum::<usize>());
    }
}

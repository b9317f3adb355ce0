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
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::budget::{Budget, LINE_OVERHEAD};
use crate::chat::RoomId;
use crate::sync;

mod db;
mod upgrade;
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

/// Lines that may wait for the disk; their bytes are bounded too, by the
/// store's share of the memory budget, so this only needs to hold what the
/// hub can hand over in a burst while the writer gathers and commits one
/// batch on a busy machine (the fan-out benchmark's 20,000-line burst
/// keeps every line at this size). Past either bound a line is dropped, not
/// waited for: the hub must never stall the chat on a slow disk, and a
/// lost line of history is a smaller harm than every room going quiet.
/// (A topic, rules or bans are never dropped: see `Pending`.)
pub const QUEUE_WRITES: usize = 16384;

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

    /// [`Retention::lines`] as SQLite counts: a bound past its reach is none.
    fn line_limit(&self) -> i64 {
        i64::try_from(self.lines).unwrap_or(i64::MAX)
    }

    /// [`Retention::room_bytes`] as SQLite counts.
    fn byte_limit(&self) -> i64 {
        i64::try_from(self.room_bytes).unwrap_or(i64::MAX)
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
/// metrics); only the feed and the writer change it. `queued` goes up and
/// down with the queue; the other counts never go back while the process
/// runs. The writer counts a change as written or failed before it takes
/// it from `queued`: once `queued` reads 0 (read with `Acquire`), every
/// change handed over before is in `written`, `failed` or `dropped`. What
/// the queue costs in memory is the budget's store share
/// ([`Budget::store_used`](crate::budget::Budget::store_used)).
#[derive(Debug, Default)]
pub struct StoreCounts {
    /// Changes waiting for the writer.
    pub queued: AtomicUsize,
    /// Lines dropped because the queue was full (and anything given
    /// after the writer ended).
    pub dropped: AtomicU64,
    /// Changes lost because the disk refused them (full, read-only, failing).
    pub failed: AtomicU64,
    /// Changes on disk.
    pub written: AtomicU64,
}

/// What the queue to the writer carries.
#[derive(Debug)]
enum Queued {
    /// A line for a room's history.
    Line(Change),
    /// Something is [`Pending`]: the writer takes it with its next batch.
    LookAtPending,
}

/// Topics, rules and bans on their way to the writer: the latest of each
/// room's (and the server's), which the writer takes whole with each
/// batch, and once more when it ends. Not in the queue: unlike a line, a
/// lost one would not be made good by the next (a ban would be forgotten
/// at the restart), so none may be dropped for want of room, and none may
/// wait in the hub for the queue to have room (nothing would hand it over
/// if the chat went quiet). Keeping only the latest of each bounds it by
/// the rooms.
#[derive(Debug, Default)]
struct Pending(Mutex<Vec<Change>>);

impl Pending {
    /// Takes everything that waits, oldest first.
    fn take(&self) -> Vec<Change> {
        std::mem::take(&mut *sync::lock(&self.0))
    }
}

/// The hub's end of the store: hands each write to the writer, never
/// waiting. The writer ends once this is dropped and it has written what
/// waited.
pub struct Feed {
    writes: Sender<Queued>,
    pending: Arc<Pending>,
    counts: Arc<StoreCounts>,
    budget: Arc<Budget>,
    /// Each room's name, once asked, so that a line costs no new string.
    /// Room numbers are never reused, so an entry never goes stale.
    names: HashMap<RoomId, Arc<str>>,
    /// Whether the log already said that writes are being dropped.
    told_full: bool,
    /// False with `--history 0`: no line is kept, so none is queued.
    keeps_lines: bool,
    /// The writer's thread, nudged every [`writer::NUDGE_EVERY`] lines.
    writer: Thread,
    /// Lines queued since the last nudge.
    since_nudge: u32,
    /// The time the last line was given: the clock may step back, but a
    /// room's lines must not, for the prune forgets a room's old lines as
    /// its first ones.
    last_at: SystemTime,
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
        if !self.keeps_lines {
            return;
        }
        let Some(room) = self.name_of(room, name) else {
            return;
        };
        let at = SystemTime::now().max(self.last_at);
        self.last_at = at;
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

    /// Hands `write` to the writer, never waiting. A line goes into the
    /// queue; if the queue is full, or its bytes would pass the store's
    /// share of the budget, the line is dropped and counted (the log says
    /// so once until the queue has room again). A topic, rules or bans
    /// are kept apart instead, the latest of each, for the writer to take
    /// with its next batch: never dropped for want of room.
    pub fn save(&mut self, write: Change) {
        if !matches!(write, Change::Line { .. }) {
            return self.keep(write);
        }
        let cost = write.cost();
        let full = if self.budget.try_charge_store(cost) {
            self.count_in();
            match self.writes.try_send(Queued::Line(write)) {
                Ok(()) => {
                    self.since_nudge += 1;
                    if self.since_nudge == writer::NUDGE_EVERY {
                        self.since_nudge = 0;
                        self.writer.unpark();
                    }
                    if self.told_full && self.writes.len() < QUEUE_WRITES / 2 {
                        self.told_full = false;
                        log::info!("the store keeps up again");
                    }
                    return;
                }
                Err(err) => {
                    self.count_out();
                    self.budget.refund_store(cost);
                    matches!(err, TrySendError::Full(_))
                }
            }
        } else {
            true
        };
        self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        if !std::mem::replace(&mut self.told_full, true) {
            if full {
                log::warn!(
                    "the store's queue is full ({QUEUE_WRITES} lines or {} KiB): the disk \
                     is slower than the chat, and what is said now is not kept (the chat \
                     goes on)",
                    self.budget.store_share() / 1024
                );
            } else {
                log::error!(
                    "the store's thread has ended: nothing more is kept (the chat goes on)"
                );
            }
        }
    }

    /// Makes `write` (not a line) pending, in place of an older one of the
    /// same room, or of the server's bans, and wakes the writer if it was
    /// the first.
    fn keep(&mut self, write: Change) {
        let key = pending_key(&write);
        let cost = write.cost();
        let was_empty = {
            let mut pending = sync::lock(&self.pending.0);
            let was_empty = pending.is_empty();
            if let Some(at) = pending.iter().position(|older| pending_key(older) == key) {
                let older = pending.remove(at);
                self.count_out();
                self.budget.refund_store(older.cost());
            }
            self.budget.charge_store(cost);
            self.count_in();
            pending.push(write);
            was_empty
        };
        if !was_empty {
            return;
        }
        // A full queue needs no wake: the writer is busy, and looks at
        // what is pending with its next batch.
        if let Err(TrySendError::Disconnected(_)) = self.writes.try_send(Queued::LookAtPending) {
            for lost in self.pending.take() {
                self.count_out();
                self.budget.refund_store(lost.cost());
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
            log::error!("the store's thread has ended: a topic or rules were not kept");
        }
    }

    /// Counts a write as waiting (what it costs is the budget's store
    /// share, the caller's to charge).
    fn count_in(&self) {
        self.counts.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes back [`Feed::count_in`] for a write that did not go.
    fn count_out(&self) {
        self.counts.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a pending write replaces: the same kind for the same room (or the
/// server's bans).
fn pending_key(write: &Change) -> (u8, String) {
    match write {
        Change::Line { room, .. } => (0, room.to_ascii_lowercase()),
        Change::Topic { room, .. } => (1, room.to_ascii_lowercase()),
        Change::Rules { room, .. } => (2, room.to_ascii_lowercase()),
        Change::ServerBans(_) => (3, String::new()),
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

    /// Starts the writer; what waits for it counts in `budget`'s store
    /// share.
    /// Returns what the hub gets, and the writer.
    pub fn start(self, budget: &Arc<Budget>) -> io::Result<(Kept, Writing)> {
        let (writes, queue) = crossbeam_channel::bounded(QUEUE_WRITES);
        let (alive, done) = crossbeam_channel::bounded(0);
        let pending = Arc::new(Pending::default());
        let thread = writer::spawn(
            self.conn,
            self.lock,
            queue,
            Arc::clone(&pending),
            self.retention,
            Arc::clone(&self.counts),
            Arc::clone(budget),
            alive,
        )?;
        let feed = Feed {
            writes,
            pending,
            counts: self.counts,
            budget: Arc::clone(budget),
            names: HashMap::new(),
            told_full: false,
            keeps_lines: self.retention.lines > 0,
            writer: thread.thread().clone(),
            since_nudge: 0,
            last_at: SystemTime::UNIX_EPOCH,
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
    /// The file was made by an earlier version of the server, and could
    /// not be brought up to this one's tables (for want of room on the
    /// disk it is not refused: the chat goes on in memory).
    NotUpgraded {
        /// The file.
        file: PathBuf,
        /// What SQLite said.
        why: String,
    },
    /// The file says no version (as a copy made by `sqlite3 .dump` does),
    /// and its tables are of no version this server knows.
    Unrecognised {
        /// The file.
        file: PathBuf,
        /// Its tables' names.
        tables: String,
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
                let file = file.display().to_string();
                write!(
                    f,
                    "{file} is damaged ({why}); it was left as it is. To save what it \
                     holds: {}; check that {file}.recovered has your rooms (sqlite3 \
                     {file}.recovered 'select count(*) from lines') before moving it to \
                     {file} (and removing {file}-wal and {file}-shm); or move {file} \
                     aside to start with an empty store",
                    recovery(&file)
                )
            }
            StoreError::NotUpgraded { file, why } => write!(
                f,
                "{} was made by an earlier chat-server, and could not be brought up to \
                 this one's version {} ({why}); it was left as it is. Start the earlier \
                 chat-server on it, or move it aside to start with an empty store",
                file.display(),
                db::VERSION
            ),
            StoreError::Unrecognised { file, tables } => write!(
                f,
                "{} has no version, and its tables ({tables}) are not a chat-server's; \
                 it was left as it is. Give this server a directory of its own \
                 (--data-dir), or move the file aside to start with an empty store",
                file.display()
            ),
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

/// The shell commands that copy what SQLite can still read of `file` into
/// `FILE.recovered`. `.dump` rather than `.recover`: the `sqlite3` of
/// Debian 12 (3.40.1) fails at `.recover` and leaves a file with no
/// tables. `.dump` writes the rows it can read and ends with a `ROLLBACK`
/// when it met damage; made a `COMMIT`, the rows are kept. It does not
/// keep the file's version, and is not given one: the tables it kept are
/// the damaged file's, of whatever version that was, and a file whose
/// version reads 0 is known by its tables when it is opened.
fn recovery(file: &str) -> String {
    format!(
        "sqlite3 {file} .dump | sed 's/^ROLLBACK; -- due to errors$/COMMIT;/' | \
         sqlite3 {file}.recovered"
    )
}

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
        Err(err) => return Err(db::refusal(dir, err.into())),
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
mod tests;

//! The store's thread: takes the data directory (made, locked, opened),
//! then writes what the hub queued, as much as waits in one transaction,
//! and forgets what is past the retention on a timer. Not what goes into
//! the file (`db`), nor the hub's side of the queue (`Feed`).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rusqlite::Connection;

use super::{
    db, upgrade, Change, Pending, Queued, Retention, StoreCounts, StoreError, PRUNE_EVERY,
};
use crate::budget::Budget;

/// The file whose lock says a server uses the directory. The kernel lets
/// go of it when the process ends, however it ends: a `kill -9` leaves no
/// stale lock behind.
pub const LOCK_FILE: &str = "lock";

/// How long the writer lets writes gather after a transaction that took
/// all there was: each commit writes at least a 4 KiB page of the log,
/// however short its lines, so a chat's lines share commits, and the hub's
/// sends need not wake the writer (a burst nudges it, see
/// [`NUDGE_EVERY`]). At a chat's pace, a `kill -9` loses about these
/// 100 ms of lines.
const GATHER: Duration = Duration::from_millis(100);

/// Lines the feed queues between two nudges that end the writer's
/// gathering pause early ([`gather`]): a burst is written a few hundred
/// lines at a time, rather than filling the queue while the writer waits.
/// The nudge is needed: the pause looks at the queue only when the writer
/// wakes, and nothing else wakes a parked writer before [`GATHER`] is
/// over (it waits on no channel), so without it a hub handing over more
/// than [`QUEUE_WRITES`](super::QUEUE_WRITES) lines in one pause (164,000
/// a second) would drop lines a writer that keeps up could have written
/// (`a_burst_ends_the_gathering_pause` in this module's tests fails
/// without it). A count kept by the feed, not a look at the queue: nothing
/// more on the hub's path per line than an increment, and an unpark per
/// 256 lines.
pub(super) const NUDGE_EVERY: u32 = 256;

/// The most writes in one transaction: a commit is cheap in WAL mode, and
/// a bound keeps one from holding the lines behind it for long.
const MOST_PER_BATCH: usize = 1024;

/// The log says the disk refuses writes at most this often: a disk at its
/// limit flaps between taking a small write and refusing the next.
const FAILURE_WARNING_EVERY: Duration = Duration::from_secs(600);

/// The permission bits of the group and of others: the store's files have
/// none of them, as they hold what people said.
const OPEN_TO_OTHERS: u32 = 0o077;

/// Makes `dir` (only its owner may read it: it holds what people said),
/// takes its lock and opens the file. `Ok(None)`, said once in the log, if
/// the disk refuses: the chat then goes on in memory.
pub fn prepare(dir: &Path) -> Result<Option<(File, Connection)>, StoreError> {
    let in_memory = |what: &str, err: &dyn std::fmt::Display| {
        log::warn!(
            "the data directory {} cannot be written ({what}: {err}): nothing will be \
             kept across a restart; the chat goes on in memory",
            dir.display()
        );
    };
    if let Err(err) = DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        in_memory("making it", &err);
        return Ok(None);
    }
    warn_if_open_to_others(dir);
    let lock = match OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(LOCK_FILE))
    {
        Ok(lock) => lock,
        Err(err) => {
            in_memory("its lock file", &err);
            return Ok(None);
        }
    };
    if let Err(err) = close_to_others(&lock) {
        in_memory("its lock file", &err);
        return Ok(None);
    }
    match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            return Err(StoreError::Locked {
                dir: dir.to_path_buf(),
            })
        }
        Err(err) => {
            in_memory("locking it", &io::Error::from(err));
            return Ok(None);
        }
    }
    let file = dir.join(db::DB_FILE);
    if let Err(err) = keep_to_owner(&file) {
        in_memory(db::DB_FILE, &err);
        return Ok(None);
    }
    // A file that needed bringing up gets its own warning: it was
    // readable, and what it keeps was not read.
    let cannot_write = |err: &rusqlite::Error| {
        if !is_earlier_version(&file) {
            return in_memory(db::DB_FILE, err);
        }
        log::warn!(
            "{} could not be brought up to version {} for want of room or leave to \
             write ({err}); the file is untouched: nothing of it is read, nothing will \
             be kept across a restart; the chat goes on in memory",
            file.display(),
            db::VERSION
        );
    };
    let mut conn = match db::open(&file) {
        Ok(conn) => conn,
        Err(db::Unusable::Sql(err)) if db::is_unwritable(&err) => {
            cannot_write(&err);
            return Ok(None);
        }
        Err(err) => return Err(db::refusal(dir, err)),
    };
    match upgrade::to_current(&mut conn) {
        Ok(version) => {
            if version != 0 && version != db::VERSION {
                log::info!(
                    "store {}: brought from version {version} to version {}",
                    file.display(),
                    db::VERSION
                );
            }
            Ok(Some((lock, conn)))
        }
        Err(db::Unusable::Sql(err)) if db::is_unwritable(&err) => {
            cannot_write(&err);
            Ok(None)
        }
        Err(db::Unusable::Sql(err)) => Err(StoreError::NotUpgraded {
            file,
            why: err.to_string(),
        }),
        Err(err) => Err(db::refusal(dir, err)),
    }
}

/// True if `file` says it is of a version before this one, read without
/// writing: for the warning when it cannot be written.
fn is_earlier_version(file: &Path) -> bool {
    let Ok(conn) = Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return false;
    };
    db::version_of(&conn).is_ok_and(|version| (1..db::VERSION).contains(&version))
}

/// An existing directory is left with the mode its owner gave it (it may
/// be one they share on purpose), but the log says once if others may
/// look in: the files are theirs alone, yet their names and sizes show.
fn warn_if_open_to_others(dir: &Path) {
    let Ok(meta) = fs::metadata(dir) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & OPEN_TO_OTHERS != 0 {
        log::warn!(
            "the data directory {} is open to others (mode {mode:o}): its files are \
             readable by their owner only, but others can see their names and sizes; \
             chmod 700 {} to close it",
            dir.display(),
            dir.display()
        );
    }
}

/// Makes the database file readable by its owner only before SQLite opens
/// it: a new one is made with mode 0600 (SQLite would make it 0644), and
/// an existing one, or its `-wal` and `-shm`, loses what the group and
/// others may do. SQLite gives the `-wal` and `-shm` it makes the mode of
/// the database file, so they follow. Only bits are taken away: a file
/// made read-only stays read-only (and is said to be so later).
fn keep_to_owner(file: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    let mut wal = file.as_os_str().to_owned();
    wal.push("-wal");
    let mut shm = file.as_os_str().to_owned();
    shm.push("-shm");
    for path in [file.as_os_str(), &wal, &shm].map(Path::new) {
        match File::open(path) {
            Ok(opened) => close_to_others(&opened)?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Takes the group's and others' bits away from `file`'s mode.
fn close_to_others(file: &File) -> io::Result<()> {
    let mode = file.metadata()?.permissions().mode();
    if mode & OPEN_TO_OTHERS != 0 {
        file.set_permissions(fs::Permissions::from_mode(mode & !OPEN_TO_OTHERS))?;
    }
    Ok(())
}

/// Starts the writer. It holds `lock` and `alive` for as long as it runs,
/// and ends once every sender of `queue` is gone and what waited there
/// and in `pending` is written.
// Each argument is one thing the writer is handed to own.
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn(
    conn: Connection,
    lock: File,
    queue: Receiver<Queued>,
    pending: Arc<Pending>,
    retention: Retention,
    counts: Arc<StoreCounts>,
    budget: Arc<Budget>,
    alive: Sender<()>,
) -> io::Result<JoinHandle<()>> {
    let writer = Writer {
        conn,
        retention,
        counts,
        budget,
        failing: false,
        warned: None,
        known: db::Known::default(),
    };
    thread::Builder::new().name("store".into()).spawn(move || {
        let _alive = alive;
        let _lock = lock;
        let mut writer = writer;
        writer.prune();
        writer.run(&queue, &pending);
    })
}

struct Writer {
    conn: Connection,
    retention: Retention,
    counts: Arc<StoreCounts>,
    budget: Arc<Budget>,
    /// Set while the disk refuses writes.
    failing: bool,
    /// When the log last said the disk refuses writes, and whether it has
    /// said since that it writes again.
    warned: Option<(Instant, bool)>,
    /// The rooms whose row is in the file, by name as written, with their
    /// numbers, emptied at each prune (which may remove rows) and after a
    /// failed batch; and the rooms written to since the last prune, which
    /// the next one looks at.
    known: db::Known,
}

impl Writer {
    /// Writes until every sender is gone, then closes the file.
    fn run(mut self, queue: &Receiver<Queued>, pending: &Pending) {
        self.write_until_done(queue, pending);
        // Closing checkpoints the log into the file; if the disk refuses,
        // the log stays, and SQLite replays it at the next start.
        if let Err((_, err)) = self.conn.close() {
            log::warn!("store: closing the file: {err}");
        }
    }

    fn write_until_done(&mut self, queue: &Receiver<Queued>, pending: &Pending) {
        let mut batch = Vec::with_capacity(MOST_PER_BATCH);
        let mut next_prune = Instant::now() + PRUNE_EVERY;
        loop {
            // Looked at before each wait: a chat that never pauses for a
            // minute would otherwise never let the wait time out.
            if Instant::now() >= next_prune {
                self.prune_written();
                next_prune = Instant::now() + PRUNE_EVERY;
            }
            let mut done = false;
            match queue.recv_deadline(next_prune) {
                Ok(Queued::Line(write)) => batch.push(write),
                Ok(Queued::LookAtPending) => {}
                Err(RecvTimeoutError::Timeout) => continue,
                // The feed is gone: what is pending is the last to write.
                Err(RecvTimeoutError::Disconnected) => done = true,
            }
            // What came meanwhile goes in the same transaction: the busier
            // the chat, the fewer commits per line.
            for queued in queue.try_iter().take(MOST_PER_BATCH - 1) {
                if let Queued::Line(write) = queued {
                    batch.push(write);
                }
            }
            let full = batch.len() == MOST_PER_BATCH;
            // After the lines: each is the latest of its kind, and no line
            // changes what it writes.
            batch.extend(pending.take());
            if batch.is_empty() {
                if done {
                    return;
                }
                continue;
            }
            self.write(&mut batch);
            if done {
                return;
            }
            // A moment for the next lines to gather: meanwhile the writer
            // waits on no channel, so the hub's sends wake nobody (a wake
            // is a system call on the hub's thread, for every line of a
            // chat that speaks just slower than the writer writes).
            if !full {
                gather(queue, GATHER);
            }
        }
    }

    /// Writes `batch` in one transaction and lets go of it.
    fn write(&mut self, batch: &mut Vec<Change>) {
        let result = db::write_batch(&mut self.conn, batch, &mut self.known);
        if log::log_enabled!(log::Level::Trace) {
            let now = SystemTime::now();
            let waited = batch
                .iter()
                .filter_map(|write| match write {
                    Change::Line { at, .. } => now.duration_since(*at).ok(),
                    _ => None,
                })
                .max();
            log::trace!(
                "store: {} writes in one transaction; the oldest line waited {waited:?}",
                batch.len()
            );
        }
        let count = batch.len();
        let bytes: usize = batch.iter().map(Change::cost).sum();
        batch.clear();
        // Counted as written or failed before it stops counting as queued,
        // so that whoever sees the queue empty sees where each change went
        // (`StoreCounts`).
        let outcome = if result.is_ok() {
            &self.counts.written
        } else {
            &self.counts.failed
        };
        outcome.fetch_add(count as u64, Ordering::Relaxed);
        self.counts.queued.fetch_sub(count, Ordering::Release);
        self.budget.refund_store(bytes);
        match result {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    if let Some((_, told @ false)) = &mut self.warned {
                        *told = true;
                        log::warn!("the store writes again");
                    }
                }
            }
            Err(err) => {
                // Rolled back: the rows this batch made are not in the file,
                // though `write_batch` noted them (the rooms written to
                // before it are kept for the prune).
                self.known.clear();
                // A disk at its limit may take one write and refuse the
                // next: said again only after a quiet while, not per flap.
                let quiet = self
                    .warned
                    .is_none_or(|(at, _)| at.elapsed() >= FAILURE_WARNING_EVERY);
                if !std::mem::replace(&mut self.failing, true) && quiet {
                    self.warned = Some((Instant::now(), false));
                    log::warn!(
                        "the store cannot write ({err}): what is said from now on is not \
                         kept across a restart until it can (the chat goes on in memory)"
                    );
                }
            }
        }
    }

    /// Forgets what is past the retention in every room: at start.
    fn prune(&mut self) {
        self.known.clear();
        let result = db::prune(&mut self.conn, &self.retention, SystemTime::now());
        pruned(&result);
    }

    /// Forgets what is past the retention in the rooms written to since
    /// the last time (and the oldest lines): on the timer.
    fn prune_written(&mut self) {
        let rooms = self.known.take_rooms();
        let result = db::prune_rooms(&mut self.conn, &self.retention, SystemTime::now(), &rooms);
        if result.is_err() {
            // Rolled back: the same rooms are the next prune's to look at.
            self.known.give_back(rooms);
        }
        pruned(&result);
    }
}

/// Lets the next lines gather for `pause` ([`GATHER`]), or until the feed
/// nudges (unparks) the writer because a burst has queued [`NUDGE_EVERY`]
/// lines.
fn gather(queue: &Receiver<Queued>, pause: Duration) {
    let until = Instant::now() + pause;
    loop {
        let now = Instant::now();
        // A nudge that came while the writer wrote ends the pause at
        // once; one for a burst already written ends it with what waits.
        if now >= until || queue.len() >= NUDGE_EVERY as usize {
            return;
        }
        thread::park_timeout(until - now);
    }
}

/// Says in the log what a prune did; a failure waits for the next time,
/// said as a warning: while it lasts the file grows past the retention.
fn pruned(result: &rusqlite::Result<usize>) {
    match result {
        Ok(0) => {}
        Ok(gone) => log::debug!("store: {gone} lines past the retention forgotten"),
        Err(err) => log::warn!(
            "the store could not forget what is past the retention ({err}): it tries \
             again in a minute"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::RoomId;
    use crate::slow_readers::Policy;
    use crate::store::Feed;
    use std::collections::HashMap;

    /// The state of this process's thread `tid`, as `/proc` says: `S`
    /// while it sleeps.
    fn state_of(tid: &str) -> Option<char> {
        let stat = fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        // After the thread's name, in parentheses.
        stat.rsplit_once(") ")?.1.chars().next()
    }

    #[test]
    fn a_burst_ends_the_gathering_pause() {
        let (writes, queue) = crossbeam_channel::bounded(super::super::QUEUE_WRITES);
        let (started, tid) = crossbeam_channel::bounded(1);
        let (ended, gathered) = crossbeam_channel::bounded(1);
        let gatherer = thread::spawn(move || {
            let me = fs::read_link("/proc/thread-self").unwrap();
            let me = me.file_name().unwrap().to_string_lossy().into_owned();
            started.send(me).unwrap();
            // Far longer than the test waits: only a nudge ends it.
            gather(&queue, Duration::from_secs(3600));
            ended.send(queue.len()).unwrap();
        });
        let mut feed = Feed {
            writes,
            pending: Arc::default(),
            counts: Arc::default(),
            budget: Budget::new(&Policy::default()),
            names: HashMap::new(),
            told_full: false,
            keeps_lines: true,
            writer: gatherer.thread().clone(),
            since_nudge: 0,
            last_at: SystemTime::UNIX_EPOCH,
        };
        let text: Arc<str> = "chat a hi\n".into();
        for _ in 1..NUDGE_EVERY {
            feed.line(RoomId(1), || Some("#a".into()), &text);
        }
        // Parked in the pause, one line short of a nudge.
        let tid = tid.recv_timeout(Duration::from_secs(10)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while state_of(&tid) != Some('S') {
            assert!(Instant::now() < deadline, "the writer never parked");
            thread::yield_now();
        }
        assert!(gathered.is_empty());
        feed.line(RoomId(1), || Some("#a".into()), &text);
        let waiting = gathered.recv_timeout(Duration::from_secs(10));
        assert_eq!(waiting, Ok(NUDGE_EVERY as usize), "the pause went on");
        gatherer.join().unwrap();
    }

    fn line(room: &str, text: &str) -> Change {
        Change::Line {
            room: room.into(),
            text: text.into(),
            at: SystemTime::now(),
        }
    }

    /// A writer on a new file in memory, keeping `lines` per room, whose
    /// disk refuses any line that says `refused`.
    fn writer(lines: usize) -> (Writer, Arc<StoreCounts>) {
        let mut conn = db::open(Path::new(":memory:")).unwrap();
        upgrade::to_current(&mut conn).unwrap();
        conn.execute_batch(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON lines WHEN NEW.text = 'refused'
             BEGIN SELECT RAISE(ABORT, 'the disk is full'); END;",
        )
        .unwrap();
        let counts = Arc::new(StoreCounts::default());
        let writer = Writer {
            conn,
            retention: Retention {
                lines,
                room_bytes: 1 << 20,
                days: 30,
            },
            counts: Arc::clone(&counts),
            budget: Budget::new(&Policy::default()),
            failing: false,
            warned: None,
            known: db::Known::default(),
        };
        (writer, counts)
    }

    /// Writes `batch` as the feed would have queued it.
    fn write(writer: &mut Writer, mut batch: Vec<Change>) {
        for change in &batch {
            writer.budget.charge_store(change.cost());
            writer.counts.queued.fetch_add(1, Ordering::Relaxed);
        }
        writer.write(&mut batch);
    }

    #[test]
    fn after_a_failed_batch_a_rooms_next_lines_and_topic_come_back() {
        let (mut writer, counts) = writer(50);
        // The disk refuses the second line, after the room's row was made
        // in the same transaction.
        write(
            &mut writer,
            vec![line("#Tea", "kept?"), line("#Tea", "refused")],
        );
        assert_eq!(counts.failed.load(Ordering::Relaxed), 2);
        // Another room first: it takes the number #Tea's row had in the
        // failed batch, which the writer must not still take for #Tea's.
        write(&mut writer, vec![line("#Other", "other")]);
        write(&mut writer, vec![line("#Tea", "after")]);
        write(
            &mut writer,
            vec![Change::Topic {
                room: "#Tea".into(),
                topic: "leaves".into(),
            }],
        );
        assert_eq!(counts.written.load(Ordering::Relaxed), 3);
        let loaded = db::load(&writer.conn, &writer.retention, SystemTime::now()).unwrap();
        let rooms: Vec<_> = loaded
            .rooms
            .iter()
            .map(|room| (room.name.as_str(), room.topic.as_deref(), &room.lines[..]))
            .collect();
        assert_eq!(
            rooms,
            [
                ("#Other", None, &[Arc::from("other")][..]),
                ("#Tea", Some("leaves"), &[Arc::from("after")][..])
            ]
        );
    }

    #[test]
    fn the_prune_looks_at_every_room_written_to_whatever_failed_since() {
        let (mut writer, _) = writer(2);
        let lines_of = |writer: &Writer, room: &str| -> usize {
            let loaded = db::load(
                &writer.conn,
                &Retention {
                    lines: 50,
                    ..writer.retention
                },
                SystemTime::now(),
            )
            .unwrap();
            loaded
                .rooms
                .iter()
                .find(|r| r.name == room)
                .map_or(0, |r| r.lines.len())
        };
        let rules = |text: Option<&str>| Change::Rules {
            room: "#quiet".into(),
            text: text.map(String::from),
        };
        write(&mut writer, (0..4).map(|_| line("#Tea", "green")).collect());
        write(&mut writer, vec![rules(Some("mute x"))]);
        writer.prune_written();
        write(&mut writer, (0..4).map(|_| line("#Tea", "green")).collect());
        // A failed batch between the lines and the prune.
        write(&mut writer, vec![line("#Other", "refused")]);
        // Rules cleared: the room keeps nothing any more.
        write(&mut writer, vec![rules(None)]);
        writer.prune_written();
        assert_eq!(lines_of(&writer, "#Tea"), 2);
        let quiet: i64 = writer
            .conn
            .query_row(
                "SELECT count(*) FROM rooms WHERE key = '#quiet'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(quiet, 0, "a room that keeps nothing is forgotten");
        // A prune that fails leaves its rooms to the next.
        write(&mut writer, (0..3).map(|_| line("#Tea", "mint")).collect());
        writer
            .conn
            .execute_batch(
                "CREATE TEMP TRIGGER stuck BEFORE DELETE ON lines
                 BEGIN SELECT RAISE(ABORT, 'the disk fails'); END;",
            )
            .unwrap();
        writer.prune_written();
        assert_eq!(lines_of(&writer, "#Tea"), 5);
        writer.conn.execute_batch("DROP TRIGGER stuck").unwrap();
        writer.prune_written();
        assert_eq!(lines_of(&writer, "#Tea"), 2);
    }
}

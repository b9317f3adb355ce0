//! The store's file: its tables, what is read back at start, how a batch
//! of writes goes in, and what the retention forgets. SQL only: no
//! threads, no queue (`writer` has those).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use super::{millis, Change, Loaded, Retention, SavedRoom, StoreError};

/// The database file in the data directory.
pub const DB_FILE: &str = "chat.db";

/// The tables' version, in SQLite's `user_version`: a file of an earlier
/// version is brought up to this one at start
/// ([`upgrade::to_current`](super::upgrade::to_current)), one of a later
/// version is refused rather than misread. 1: lines named their room by
/// its key, with an index of lines by room; 2: lines numbered by room
/// ([`ROOM_SPAN`]), no index.
pub const VERSION: i64 = 2;

/// The most bytes the write-ahead log keeps on disk between bursts.
const JOURNAL_SIZE_LIMIT: i64 = 4 << 20;

/// Rooms by number, each with its key (the name in lower case), the name
/// as last written, the topic, the rules. Lines each with its time
/// (milliseconds since the epoch), numbered by room ([`ROOM_SPAN`]).
/// Server-wide texts by name.
pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS rooms (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        topic TEXT,
        rules TEXT
    );
    CREATE TABLE IF NOT EXISTS lines (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        text TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS server (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
";

/// The lines of room number `r` are numbered from `r * ROOM_SPAN` up, in
/// the order they were said: a room's lines are one stretch of the table,
/// read and forgotten by range, with no index. (With an index of lines by
/// room, the index was half of what writing a line cost.) A room's lines
/// stay below 2^40: a room saying 300 lines a second for a century.
pub(super) const ROOM_SPAN: i64 = 1 << 40;

/// Room numbers stay below this (2^23 - 1), so that every line number
/// fits in SQLite's 64 bits: past it, a new room takes the lowest number
/// no room has (`new_room_number`).
const ROOMS: i64 = i64::MAX / ROOM_SPAN;

/// The number a new room's row takes, bound `$bound` to [`ROOMS`]: the
/// one after the highest, or once that would reach the bound, the lowest
/// no room has. Taking a number again is safe: a room's row goes only
/// once it keeps no line (`keeps_nothing`), so its stretch is empty.
macro_rules! new_room_number {
    ($bound:literal) => {
        concat!(
            "(SELECT CASE WHEN coalesce(max(id), 0) + 1 < ",
            $bound,
            " THEN coalesce(max(id), 0) + 1 ELSE coalesce(
                (SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM rooms WHERE id = 1)),
                (SELECT min(id) + 1 FROM rooms AS r
                 WHERE NOT EXISTS (SELECT 1 FROM rooms WHERE id = r.id + 1))) END
             FROM rooms)"
        )
    };
}

/// A room number past [`ROOMS`], or a room whose stretch of line numbers
/// is full: the batch that met it is not written.
#[derive(Debug)]
pub struct OutOfSpan {
    /// The room's number.
    pub room: i64,
}

impl std::fmt::Display for OutOfSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "room number {} has no line numbers left (rooms are numbered below {ROOMS}, \
             each with {ROOM_SPAN} lines)",
            self.room
        )
    }
}

impl std::error::Error for OutOfSpan {}

impl OutOfSpan {
    /// As SQLite's errors are carried: a value that cannot be made a row.
    fn error(room: i64) -> rusqlite::Error {
        rusqlite::Error::ToSqlConversionFailure(Box::new(OutOfSpan { room }))
    }
}

/// The numbers room `room`'s lines take: from the first, up to the second.
fn span_of(room: i64) -> rusqlite::Result<(i64, i64)> {
    if (0..ROOMS).contains(&room) {
        Ok((room * ROOM_SPAN, (room + 1) * ROOM_SPAN))
    } else {
        Err(OutOfSpan::error(room))
    }
}

/// The `server` row that holds the server-wide bans.
const BANS: &str = "bans";

/// Why a file cannot be used as it is, at open or load, or brought up to
/// this version.
#[derive(Debug)]
pub enum Unusable {
    /// What SQLite said: the disk refused ([`is_unwritable`]), or the file
    /// is damaged.
    Sql(rusqlite::Error),
    /// The file says it is of this later version.
    TooNew(i64),
    /// The file says no version, and its tables (these) are of none this
    /// server knows.
    Unrecognised(String),
}

impl From<rusqlite::Error> for Unusable {
    fn from(err: rusqlite::Error) -> Self {
        Unusable::Sql(err)
    }
}

/// Opens `file` (made if missing) and checks that SQLite can read all of
/// it, and that its version is not a later one than ours; its tables are
/// [`upgrade::to_current`](super::upgrade::to_current)'s to make. WAL with `synchronous=NORMAL`: a commit is a
/// write to the log, no flush to the disk, and survives the process being
/// killed (not a power cut, which may lose the last commits, never the
/// file).
pub fn open(file: &Path) -> Result<Connection, Unusable> {
    let conn = Connection::open(file)?;
    // Reads the header: a file that is not a database fails here.
    let version = version_of(&conn)?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if check != "ok" {
        return Err(Unusable::Sql(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(check),
        )));
    }
    if version > VERSION {
        return Err(Unusable::TooNew(version));
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // After a burst the log may have grown far past its usual size: cut
    // back to this at each checkpoint rather than kept at its largest.
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    Ok(conn)
}

/// The file's version: 0 for a new one.
pub(super) fn version_of(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// The refusal for what [`is_unwritable`] does not explain: the file is
/// not one to use as it is.
pub fn refusal(dir: &Path, err: Unusable) -> StoreError {
    let file = dir.join(DB_FILE);
    match err {
        Unusable::TooNew(version) => StoreError::TooNew { file, version },
        Unusable::Unrecognised(tables) => StoreError::Unrecognised { file, tables },
        Unusable::Sql(err) => StoreError::Damaged {
            file,
            why: err.to_string(),
        },
    }
}

/// True if `err` says the disk cannot be written (read-only, full, no
/// permission, no room for the journal), as opposed to a file that is
/// not ours or damaged.
pub fn is_unwritable(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(
            ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::DiskFull
                | ErrorCode::PermissionDenied
                | ErrorCode::SystemIoFailure
        )
    )
}

/// Every room that keeps something, with its last lines within
/// `retention` at `now`, and the server-wide bans.
pub fn load(conn: &Connection, retention: &Retention, now: SystemTime) -> rusqlite::Result<Loaded> {
    let oldest = retention.oldest_kept(now);
    let mut rooms = Vec::new();
    let mut each_room = conn.prepare("SELECT id, name, topic, rules FROM rooms ORDER BY key")?;
    let mut lines_of = conn.prepare(
        "SELECT text FROM lines WHERE id >= ?1 AND id < ?2 AND at >= ?3
         ORDER BY id DESC LIMIT ?4",
    )?;
    let limit = retention.line_limit();
    let found = each_room.query_map([], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            SavedRoom {
                name: row.get(1)?,
                topic: row.get(2)?,
                rules: row.get(3)?,
                lines: Vec::new(),
            },
        ))
    })?;
    for found in found {
        let (id, mut room) = found?;
        let (first, end) = span_of(id)?;
        let mut bytes = 0;
        for text in lines_of.query_map(params![first, end, oldest, limit], |row| {
            row.get::<_, String>(0)
        })? {
            let text = text?;
            bytes += text.len();
            if bytes > retention.room_bytes {
                break;
            }
            room.lines.push(Arc::from(text));
        }
        room.lines.reverse();
        if !room.lines.is_empty() || room.topic.is_some() || room.rules.is_some() {
            rooms.push(room);
        }
    }
    let server_bans = conn
        .query_row("SELECT value FROM server WHERE name = ?1", [BANS], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(Loaded { rooms, server_bans })
}

/// The rooms whose row is in the file, as the writer last wrote them, and
/// those written to since the last prune.
#[derive(Debug, Default)]
pub struct Known {
    /// Each room's number, by its name as written (a new spelling writes
    /// the row again, with that name).
    rooms: HashMap<Arc<str>, i64>,
    /// The number each room's next line takes, by the room's number.
    next: HashMap<i64, i64>,
    /// The rooms a committed batch wrote to since the last prune: those
    /// the next one looks at. Kept apart from `rooms`, which a failed batch
    /// empties: a room written before the failure still needs its prune.
    written: HashSet<i64>,
}

impl Known {
    /// Forgets every room's row and next line, not which rooms were
    /// written to: the rows may have gone (a failed batch).
    pub fn clear(&mut self) {
        self.rooms.clear();
        self.next.clear();
    }

    /// The numbers of the rooms written to, each once, for a prune, which
    /// may remove rows: every room's row is forgotten too.
    pub fn take_rooms(&mut self) -> Vec<i64> {
        self.clear();
        let mut rooms: Vec<i64> = self.written.drain().collect();
        rooms.sort_unstable();
        rooms
    }

    /// Gives back what [`Known::take_rooms`] took, for a prune that failed.
    pub fn give_back(&mut self, rooms: Vec<i64>) {
        self.written.extend(rooms);
    }
}

/// Puts `writes` on disk in one transaction: all or none. `known` holds
/// the rooms already in the file, so that a room's row is written once,
/// not with each of its lines, and each line names its room by number.
/// The caller empties it when rows may have gone (a failed batch, whose
/// rows were rolled back though they were added here; a prune). The
/// rooms it wrote to count as written only once the batch is committed.
pub fn write_batch(
    conn: &mut Connection,
    writes: &[Change],
    known: &mut Known,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    // Rooms not yet in `known`, or whose rules or topic changed: a rare
    // few, so a line already known costs nothing more.
    let mut touched = Vec::new();
    {
        let mut room_row = tx.prepare_cached(concat!(
            "INSERT INTO rooms (id, key, name) VALUES (",
            new_room_number!("?3"),
            ", ?1, ?2) ON CONFLICT (key) DO UPDATE SET name = excluded.name RETURNING id"
        ))?;
        let mut last_line =
            tx.prepare_cached("SELECT max(id) FROM lines WHERE id >= ?1 AND id < ?2")?;
        let mut line = tx.prepare_cached("INSERT INTO lines (id, at, text) VALUES (?1, ?2, ?3)")?;
        // A topic makes its room's row itself: it must not depend on
        // `known`, which a failed batch may have left ahead of the file.
        let mut topic = tx.prepare_cached(concat!(
            "INSERT INTO rooms (id, key, name, topic) VALUES (",
            new_room_number!("?4"),
            ", ?1, ?2, ?3) ON CONFLICT (key) DO UPDATE SET name = excluded.name,
                 topic = excluded.topic RETURNING id"
        ))?;
        // Rules come by the room's key, not its name as written: a new row
        // takes the key as its name until a line or topic gives the real
        // one, and an existing row keeps its name.
        let mut rules = tx.prepare_cached(concat!(
            "INSERT INTO rooms (id, key, name, rules) VALUES (",
            new_room_number!("?3"),
            ", ?1, ?1, ?2) ON CONFLICT (key) DO UPDATE SET rules = excluded.rules
             RETURNING id"
        ))?;
        for write in writes {
            match write {
                Change::Line { room, text, at } => {
                    let id = match known.rooms.get(room) {
                        Some(&id) => id,
                        None => {
                            let key = room.to_ascii_lowercase();
                            let id =
                                room_row.query_row(params![key, room, ROOMS], |row| row.get(0))?;
                            known.rooms.insert(Arc::clone(room), id);
                            touched.push(id);
                            id
                        }
                    };
                    let (first, end) = span_of(id)?;
                    let next = match known.next.get(&id) {
                        Some(&next) => next,
                        None => last_line
                            .query_row([first, end], |row| row.get::<_, Option<i64>>(0))?
                            .map_or(first, |last| last + 1),
                    };
                    if next >= end {
                        return Err(OutOfSpan::error(id));
                    }
                    line.execute(params![next, millis(*at), text])?;
                    known.next.insert(id, next + 1);
                }
                Change::Topic { room, topic: text } => {
                    let key = room.to_ascii_lowercase();
                    let id = topic.query_row(params![key, room, text, ROOMS], |row| row.get(0))?;
                    known.rooms.insert(Arc::clone(room), id);
                    touched.push(id);
                }
                Change::Rules { room, text } => {
                    let key = room.to_ascii_lowercase();
                    // Written to: with its rules gone, it may keep nothing.
                    touched.push(rules.query_row(params![key, text, ROOMS], |row| row.get(0))?);
                }
                Change::ServerBans(Some(text)) => {
                    tx.execute(
                        "INSERT INTO server (name, value) VALUES (?1, ?2)
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                        params![BANS, text],
                    )?;
                }
                Change::ServerBans(None) => {
                    tx.execute("DELETE FROM server WHERE name = ?1", [BANS])?;
                }
            }
        }
    }
    tx.commit()?;
    known.written.extend(touched);
    Ok(())
}

/// The rooms that keep nothing any more: no topic, no rules, no line
/// (after a prune took their last); `?1` is [`ROOM_SPAN`]. A macro, to be
/// one text in both statements that forget them.
macro_rules! keeps_nothing {
    () => {
        "topic IS NULL AND rules IS NULL AND NOT EXISTS (SELECT 1 FROM lines
             WHERE lines.id >= rooms.id * ?1 AND lines.id < (rooms.id + 1) * ?1)"
    };
}

/// Forgets every room that keeps nothing (`keeps_nothing`).
const FORGET_EMPTY_ROOMS: &str = concat!("DELETE FROM rooms WHERE ", keeps_nothing!());

/// Forgets room `?2` if it keeps nothing (`keeps_nothing`).
const FORGET_IF_EMPTY: &str = concat!("DELETE FROM rooms WHERE id = ?2 AND ", keeps_nothing!());

/// Forgets the lines past `retention` at `now` (too old, too many, too
/// many bytes, per room), then the rooms that keep nothing, looking at
/// every line: once, at start. Returns the lines forgotten.
pub fn prune(
    conn: &mut Connection,
    retention: &Retention,
    now: SystemTime,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut gone = tx.execute(
        "DELETE FROM lines WHERE at < ?1",
        [retention.oldest_kept(now)],
    )?;
    // Newest first in each room: a line goes once the lines after it, and
    // it, are more than the room may keep.
    gone += tx.execute(
        "DELETE FROM lines WHERE id IN (
            SELECT id FROM (
                SELECT id,
                    ROW_NUMBER() OVER newest AS n,
                    SUM(length(CAST(text AS BLOB))) OVER newest AS bytes
                FROM lines
                WINDOW newest AS (PARTITION BY id / ?3 ORDER BY id DESC)
            ) WHERE n > ?1 OR bytes > ?2
        )",
        params![retention.line_limit(), retention.byte_limit(), ROOM_SPAN],
    )?;
    tx.execute(FORGET_EMPTY_ROOMS, [ROOM_SPAN])?;
    tx.commit()?;
    Ok(gone)
}

/// As [`prune`], looking only at `rooms` (by number: those written since
/// the last time) and at the oldest lines of each room, so that the cost
/// follows what was said, not all that is kept. Returns the lines
/// forgotten.
pub fn prune_rooms(
    conn: &mut Connection,
    retention: &Retention,
    now: SystemTime,
    rooms: &[i64],
) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut too_old = 0;
    {
        // A room's lines are in the order they were said: its old ones are
        // its first, up to the first that is young enough.
        let mut old_of = tx.prepare_cached(
            "DELETE FROM lines WHERE id >= ?1 AND id < coalesce(
                (SELECT id FROM lines WHERE id >= ?1 AND id < ?2 AND at >= ?3
                 ORDER BY id LIMIT 1),
                ?2)",
        )?;
        let every_room: Vec<i64> = tx
            .prepare_cached("SELECT id FROM rooms")?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let oldest = retention.oldest_kept(now);
        for room in every_room {
            let (first, end) = span_of(room)?;
            too_old += old_of.execute(params![first, end, oldest])?;
        }
    }
    let mut gone = too_old;
    {
        // A room's lines newest first: the one past the count, or where the
        // bytes pass the cap, goes with all before it.
        let mut past_count = tx.prepare_cached(
            "DELETE FROM lines WHERE id >= ?1 AND id <=
                (SELECT id FROM lines WHERE id >= ?1 AND id < ?2
                 ORDER BY id DESC LIMIT 1 OFFSET ?3)",
        )?;
        let mut past_bytes = tx.prepare_cached(
            "DELETE FROM lines WHERE id >= ?1 AND id <= (
                SELECT max(id) FROM (
                    SELECT id, SUM(length(CAST(text AS BLOB))) OVER (ORDER BY id DESC) AS bytes
                    FROM lines WHERE id >= ?1 AND id < ?2
                ) WHERE bytes > ?3)",
        )?;
        let mut empty = tx.prepare_cached(FORGET_IF_EMPTY)?;
        let (lines, bytes) = (retention.line_limit(), retention.byte_limit());
        for &room in rooms {
            let (first, end) = span_of(room)?;
            gone += past_count.execute(params![first, end, lines])?;
            gone += past_bytes.execute(params![first, end, bytes])?;
            empty.execute(params![ROOM_SPAN, room])?;
        }
    }
    // Old lines may have been any room's last.
    if too_old > 0 {
        tx.execute(FORGET_EMPTY_ROOMS, [ROOM_SPAN])?;
    }
    tx.commit()?;
    Ok(gone)
}

#[cfg(test)]
mod tests;

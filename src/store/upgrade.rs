//! Brings a store file of an earlier version up to the current tables
//! ([`VERSION`]) at start, in one transaction, or makes a new file's.
//! Not the tables themselves, nor what goes into them (`db`).

use rusqlite::Connection;

use super::db::{version_of, Unusable, ROOM_SPAN, SCHEMA, VERSION};

/// Makes the tables of a new file, or brings an earlier version's up to
/// [`VERSION`], in one transaction: a failure leaves the file as it was.
/// Returns the version the file had (as its tables say, when it says 0).
pub fn to_current(conn: &mut Connection) -> Result<i64, Unusable> {
    let tx = conn.transaction()?;
    let version = match version_of(&tx)? {
        // A new file, or one copied by `sqlite3 .dump`, which does not
        // keep the version: its tables tell.
        0 => version_by_tables(&tx)?,
        version => version,
    };
    match version {
        VERSION => {}
        1 => {
            tx.execute_batch(SET_ASIDE_VERSION_1)?;
            tx.execute_batch(SCHEMA)?;
            tx.execute_batch(COPY_VERSION_1_ROOMS)?;
            tx.execute(COPY_VERSION_1_LINES, [ROOM_SPAN])?;
            tx.execute_batch(DROP_VERSION_1)?;
        }
        _ => tx.execute_batch(SCHEMA)?,
    }
    // Written even when it has not changed: a file that cannot be written
    // is found at start, and said once then, not at the first line.
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(version)
}

/// The version a file that says 0 is of: 0 with no tables (a new file),
/// else the one whose tables it has. Tables of no version are refused
/// before anything is written: made over, they would be neither ours nor
/// what they were.
fn version_by_tables(tx: &Connection) -> Result<i64, Unusable> {
    let tables: Vec<String> = tx
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if tables.is_empty() {
        return Ok(0);
    }
    let has = |table: &str, column: &str| -> rusqlite::Result<bool> {
        tx.query_row(
            "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
            [table, column],
            |row| row.get::<_, i64>(0),
        )
        .map(|n| n > 0)
    };
    let ours = tables == ["lines", "rooms", "server"];
    if ours && has("rooms", "key")? && has("lines", "text")? {
        match (has("rooms", "id")?, has("lines", "room")?) {
            (false, true) => return Ok(1),
            (true, false) => return Ok(VERSION),
            _ => {}
        }
    }
    Err(Unusable::Unrecognised(tables.join(", ")))
}

/// Sets version 1's tables aside, for [`SCHEMA`] to make version 2's in
/// their place; version 2 has no index of lines by room.
const SET_ASIDE_VERSION_1: &str = "
    DROP INDEX IF EXISTS lines_of_room;
    ALTER TABLE rooms RENAME TO rooms_v1;
    ALTER TABLE lines RENAME TO lines_v1;
";

/// Version 1's rooms into version 2's table, each with its name, topic
/// and rules. A line whose room had no row (none should) gets one, named
/// by its key.
const COPY_VERSION_1_ROOMS: &str = "
    INSERT INTO rooms (key, name, topic, rules)
        SELECT key, name, topic, rules FROM rooms_v1 ORDER BY key;
    INSERT INTO rooms (key, name)
        SELECT DISTINCT room, room FROM lines_v1
        WHERE room NOT IN (SELECT key FROM rooms) ORDER BY room;
";

/// Version 1's lines into version 2's table, numbered by room (`?1` is
/// [`ROOM_SPAN`]), each keeping its place in its room, its time and text.
const COPY_VERSION_1_LINES: &str = "
    INSERT INTO lines (id, at, text)
        SELECT rooms.id * ?1
                + ROW_NUMBER() OVER (PARTITION BY rooms.id ORDER BY lines_v1.id) - 1,
            lines_v1.at, lines_v1.text
        FROM lines_v1 JOIN rooms ON rooms.key = lines_v1.room
";

/// What is left of version 1 once copied.
const DROP_VERSION_1: &str = "
    DROP TABLE lines_v1;
    DROP TABLE rooms_v1;
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::{load, write_batch, Known};
    use crate::store::{open, Change, Retention, StoreError, DB_FILE, KEEP_ROOM_BYTES};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    /// Version 1's tables, as the server that made them wrote them.
    const VERSION_1: &str = "
        CREATE TABLE rooms (
            key TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            topic TEXT,
            rules TEXT
        ) WITHOUT ROWID;
        CREATE TABLE lines (
            id INTEGER PRIMARY KEY,
            room TEXT NOT NULL,
            at INTEGER NOT NULL,
            text TEXT NOT NULL
        );
        CREATE INDEX lines_of_room ON lines (room, id);
        CREATE TABLE server (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID;
        PRAGMA user_version = 1;
    ";

    /// A data directory of its own for each test.
    fn data_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A version 1 file in `dir`: `#Tea` with a topic and three lines
    /// (the first four days old), `#quiet` with rules only, a line in
    /// `#lost` whose room has no row, and the server's bans.
    fn version_1_file(dir: &Path, now: SystemTime) -> Connection {
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        conn.execute_batch(VERSION_1).unwrap();
        let millis = |at: SystemTime| {
            at.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
        };
        let old = millis(now - Duration::from_secs(4 * 86_400));
        let now = millis(now);
        conn.execute_batch(&format!(
            "INSERT INTO rooms VALUES ('#tea', '#Tea', 'leaves', NULL),
                ('#quiet', '#quiet', NULL, 'mute x');
             INSERT INTO lines (id, room, at, text) VALUES
                (3, '#tea', {old}, 'chat a green\n'),
                (5, '#lost', {now}, 'chat b here\n'),
                (8, '#tea', {now}, 'chat a oolong\n'),
                (9, '#tea', {now}, 'chat b mint\n');
             INSERT INTO server VALUES ('bans', 'ban y');"
        ))
        .unwrap();
        conn
    }

    fn keep(days: u32) -> Retention {
        Retention {
            lines: 50,
            room_bytes: KEEP_ROOM_BYTES,
            days,
        }
    }

    #[test]
    fn a_version_1_file_is_brought_up_keeping_every_line_time_topic_rule_and_ban() {
        let dir = data_dir("version-1");
        let now = SystemTime::now();
        drop(version_1_file(&dir, now));
        let opened = open(&dir, keep(30)).unwrap().expect("a writable directory");
        let rooms: Vec<_> = opened
            .loaded
            .rooms
            .iter()
            .map(|room| {
                (
                    room.name.as_str(),
                    room.topic.as_deref(),
                    room.rules.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            rooms,
            [
                ("#lost", None, None),
                ("#quiet", None, Some("mute x")),
                ("#Tea", Some("leaves"), None)
            ]
        );
        let tea: &[Arc<str>] = &opened.loaded.rooms[2].lines;
        assert_eq!(
            tea,
            ["chat a green\n", "chat a oolong\n", "chat b mint\n"].map(Arc::from)
        );
        assert_eq!(opened.loaded.server_bans.as_deref(), Some("ban y"));
        drop(opened);
        // Each line kept its time, and its number.
        let opened = open(&dir, keep(3)).unwrap().unwrap();
        assert_eq!(
            opened.loaded.rooms[2].lines.len(),
            2,
            "the old line is past 3 days"
        );
        drop(opened);
        let mut conn = Connection::open(dir.join(DB_FILE)).unwrap();
        assert_eq!(version_of(&conn).unwrap(), VERSION);
        // Each room's lines in their order, numbered from its span.
        let by_room: Vec<(String, i64, String)> = conn
            .prepare(
                "SELECT rooms.key, lines.id % ?1, lines.text FROM lines
                 JOIN rooms ON lines.id / ?1 = rooms.id ORDER BY lines.id",
            )
            .unwrap()
            .query_map([ROOM_SPAN], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let by_room: Vec<(&str, i64, &str)> = by_room
            .iter()
            .map(|(room, n, text)| (room.as_str(), *n, text.as_str()))
            .collect();
        assert_eq!(
            by_room,
            [
                ("#tea", 0, "chat a green\n"),
                ("#tea", 1, "chat a oolong\n"),
                ("#tea", 2, "chat b mint\n"),
                ("#lost", 0, "chat b here\n"),
            ]
        );
        // A room's next line comes after those brought up.
        let later = Change::Line {
            room: "#Tea".into(),
            text: "chat c later\n".into(),
            at: now,
        };
        write_batch(&mut conn, &[later], &mut Known::default()).unwrap();
        let loaded = load(&conn, &keep(30), now).unwrap();
        assert_eq!(
            loaded.rooms[2].lines.last().map(|l| &**l),
            Some("chat c later\n")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_upgrade_that_fails_leaves_the_file_as_it_was_and_says_what_to_do() {
        let dir = data_dir("not-upgraded");
        let conn = version_1_file(&dir, SystemTime::now());
        // A table in the way of setting version 1's aside.
        conn.execute_batch("CREATE TABLE lines_v1 (x)").unwrap();
        drop(conn);
        let err = open(&dir, keep(30)).unwrap_err();
        assert!(matches!(err, StoreError::NotUpgraded { .. }), "{err:?}");
        let said = err.to_string();
        assert!(said.contains("it was left as it is"), "{said}");
        assert!(said.contains("move it aside"), "{said}");
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        assert_eq!(version_of(&conn).unwrap(), 1);
        let rooms: Vec<String> = conn
            .prepare("SELECT room FROM lines ORDER BY id")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rooms, ["#tea", "#lost", "#tea", "#tea"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_copy_that_lost_its_version_is_read_by_its_tables() {
        // `sqlite3 .dump` keeps the tables, not `user_version`.
        let dir = data_dir("version-lost");
        let now = SystemTime::now();
        let conn = version_1_file(&dir, now);
        conn.pragma_update(None, "user_version", 0).unwrap();
        drop(conn);
        let opened = open(&dir, keep(30)).unwrap().expect("a writable directory");
        let names: Vec<_> = opened
            .loaded
            .rooms
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["#lost", "#quiet", "#Tea"]);
        assert_eq!(opened.loaded.rooms[2].lines.len(), 3);
        drop(opened);
        // A version 2 file copied the same way opens as it is.
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        assert_eq!(version_of(&conn).unwrap(), VERSION);
        conn.pragma_update(None, "user_version", 0).unwrap();
        drop(conn);
        let opened = open(&dir, keep(30)).unwrap().expect("a writable directory");
        assert_eq!(opened.loaded.rooms.len(), 3);
        assert_eq!(opened.loaded.rooms[2].lines.len(), 3);
        drop(opened);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tables_of_no_version_are_refused_and_left_as_they_are() {
        let dir = data_dir("version-unknown");
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        conn.execute_batch("CREATE TABLE lines (what TEXT); INSERT INTO lines VALUES ('x');")
            .unwrap();
        drop(conn);
        let err = open(&dir, keep(30)).unwrap_err();
        let said = err.to_string();
        assert!(said.contains("its tables (lines)"), "{said}");
        assert!(said.contains("it was left as it is"), "{said}");
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        assert_eq!(version_of(&conn).unwrap(), 0);
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .unwrap();
        assert_eq!(tables, 1, "nothing was added");
        drop(conn);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

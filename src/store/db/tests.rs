//! The file's own tests: what a batch writes and load reads back, the
//! retention at load and at prune, room numbers, a file that is no database.

use super::*;
use std::time::Duration;

fn retention(lines: usize, room_bytes: usize, days: u32) -> Retention {
    Retention {
        lines,
        room_bytes,
        days,
    }
}

fn line(room: &str, text: &str, at: SystemTime) -> Change {
    Change::Line {
        room: room.into(),
        text: text.into(),
        at,
    }
}

fn memory() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    assert_eq!(
        super::super::upgrade::to_current(&mut conn).unwrap(),
        0,
        "a new file"
    );
    conn
}

fn texts(room: &SavedRoom) -> Vec<&str> {
    room.lines.iter().map(|line| &**line).collect()
}

#[test]
fn what_is_written_comes_back_by_room_with_its_case_and_topic() {
    let mut conn = memory();
    let now = SystemTime::now();
    write_batch(
        &mut conn,
        &[
            line("#Tea", "chat a green\n", now),
            line("#lobby", "chat b hi\n", now),
            Change::Topic {
                room: "#Tea".into(),
                topic: "leaves".into(),
            },
            line("#Tea", "chat a oolong\n", now),
            Change::Rules {
                room: "#quiet".into(),
                text: Some("mute x".into()),
            },
            Change::ServerBans(Some("ban y".into())),
        ],
        &mut Known::default(),
    )
    .unwrap();
    let loaded = load(&conn, &retention(50, 1 << 20, 30), now).unwrap();
    let names: Vec<_> = loaded.rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["#lobby", "#quiet", "#Tea"]);
    let tea = &loaded.rooms[2];
    assert_eq!(texts(tea), ["chat a green\n", "chat a oolong\n"]);
    assert_eq!(tea.topic.as_deref(), Some("leaves"));
    assert_eq!(loaded.rooms[1].rules.as_deref(), Some("mute x"));
    assert!(loaded.rooms[1].lines.is_empty());
    assert_eq!(loaded.server_bans.as_deref(), Some("ban y"));

    write_batch(
        &mut conn,
        &[
            Change::Rules {
                room: "#QUIET".into(),
                text: None,
            },
            Change::ServerBans(None),
        ],
        &mut Known::default(),
    )
    .unwrap();
    let loaded = load(&conn, &retention(50, 1 << 20, 30), now).unwrap();
    assert_eq!(loaded.rooms.len(), 2, "{loaded:?}");
    assert_eq!(loaded.server_bans, None);
}

#[test]
fn two_spellings_of_a_room_share_its_lines_in_order() {
    let mut conn = memory();
    let now = SystemTime::now();
    let mut known = Known::default();
    let writes = [
        line("#Tea", "chat a one\n", now),
        line("#TEA", "chat b two\n", now),
        line("#Tea", "chat a three\n", now),
    ];
    write_batch(&mut conn, &writes, &mut known).unwrap();
    write_batch(&mut conn, &writes[..1], &mut known).unwrap();
    let loaded = load(&conn, &retention(50, 1 << 20, 30), now).unwrap();
    assert_eq!(loaded.rooms.len(), 1);
    assert_eq!(
        texts(&loaded.rooms[0]),
        [
            "chat a one\n",
            "chat b two\n",
            "chat a three\n",
            "chat a one\n"
        ]
    );
}

#[test]
fn a_rules_change_leaves_the_rooms_name_as_written() {
    let mut conn = memory();
    let now = SystemTime::now();
    let mut known = Known::default();
    let rules = |text: Option<&str>| Change::Rules {
        room: "#tea".into(),
        text: text.map(String::from),
    };
    write_batch(
        &mut conn,
        &[line("#Tea", "chat a green\n", now), rules(Some("ban x"))],
        &mut known,
    )
    .unwrap();
    write_batch(
        &mut conn,
        &[line("#Tea", "chat a oolong\n", now)],
        &mut known,
    )
    .unwrap();
    // Rules for a room with no row yet, then its first line.
    write_batch(
        &mut conn,
        &[Change::Rules {
            room: "#mint".into(),
            text: Some("mute y".into()),
        }],
        &mut known,
    )
    .unwrap();
    write_batch(
        &mut conn,
        &[line("#Mint", "chat a fresh\n", now)],
        &mut known,
    )
    .unwrap();
    write_batch(&mut conn, &[rules(None)], &mut known).unwrap();
    let loaded = load(&conn, &retention(50, 1 << 20, 30), now).unwrap();
    let names: Vec<_> = loaded.rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["#Mint", "#Tea"]);
    assert_eq!(loaded.rooms[0].rules.as_deref(), Some("mute y"));
    assert_eq!(loaded.rooms[1].rules, None);
    assert_eq!(texts(&loaded.rooms[1]).len(), 2);
}

#[test]
fn the_retention_bounds_lines_bytes_and_days_at_load_and_at_prune() {
    let mut conn = memory();
    let now = SystemTime::now();
    let old = now - Duration::from_secs(3 * 86_400);
    let mut writes = vec![line("#a", "chat x ancient\n", old)];
    writes.extend((0..10).map(|n| line("#a", &format!("chat x {n}\n"), now)));
    writes.push(line("#gone", "chat x old\n", old));
    write_batch(&mut conn, &writes, &mut Known::default()).unwrap();
    // Each line "chat x N\n" is 9 bytes: 30 bytes hold three.
    let keep = retention(5, 30, 2);
    let loaded = load(&conn, &keep, now).unwrap();
    assert_eq!(loaded.rooms.len(), 1, "#gone has only an old line");
    assert_eq!(
        texts(&loaded.rooms[0]),
        ["chat x 7\n", "chat x 8\n", "chat x 9\n"]
    );

    assert_eq!(prune(&mut conn, &keep, now).unwrap(), 2 + 7);
    let left: i64 = conn
        .query_row("SELECT count(*) FROM lines", [], |row| row.get(0))
        .unwrap();
    assert_eq!(left, 3);
    let rooms: i64 = conn
        .query_row("SELECT count(*) FROM rooms", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rooms, 1, "a room that keeps nothing is forgotten");
    // By count alone.
    assert_eq!(
        prune(&mut conn, &retention(2, 1 << 20, 30), now).unwrap(),
        1
    );
    let loaded = load(&conn, &retention(50, 1 << 20, 30), now).unwrap();
    assert_eq!(texts(&loaded.rooms[0]), ["chat x 8\n", "chat x 9\n"]);
}

#[test]
fn pruning_the_rooms_written_to_forgets_as_pruning_everything_does() {
    let now = SystemTime::now();
    let old = now - Duration::from_secs(3 * 86_400);
    let mut writes = vec![line("#b", "chat x ancient\n", old)];
    writes.extend((0..10).map(|n| line("#a", &format!("chat x {n}\n"), now)));
    writes.extend((0..4).map(|n| line("#c", &format!("chat x {n}\n"), now)));
    writes.push(Change::Rules {
        room: "#d".into(),
        text: None,
    });
    let keep = retention(5, 30, 2);
    let everything = |conn: &Connection| load(conn, &retention(50, 1 << 20, 30), now).unwrap();
    let mut all = memory();
    write_batch(&mut all, &writes, &mut Known::default()).unwrap();
    let mut some = memory();
    write_batch(&mut some, &writes, &mut Known::default()).unwrap();

    assert_eq!(prune(&mut all, &keep, now).unwrap(), 1 + 7 + 1);
    let rooms = ["#a", "#c", "#d"].map(|key| {
        some.query_row("SELECT id FROM rooms WHERE key = ?1", [key], |row| {
            row.get(0)
        })
        .unwrap()
    });
    assert_eq!(
        prune_rooms(&mut some, &keep, now, &rooms).unwrap(),
        1 + 7 + 1
    );
    assert_eq!(everything(&all), everything(&some));
    let names: Vec<_> = everything(&some)
        .rooms
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["#a", "#c"], "#b only had an old line, #d nothing");
    // A room not written to is left for the next full prune.
    assert_eq!(
        prune_rooms(&mut some, &retention(1, 1 << 20, 30), now, &[]).unwrap(),
        0
    );
}

#[test]
fn a_file_that_is_not_a_database_is_damaged_not_unwritable() {
    let dir = std::env::temp_dir().join(format!("store-db-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(DB_FILE);
    std::fs::write(
        &file,
        "this is no database, but it is someone's file\n".repeat(200),
    )
    .unwrap();
    let err = open(&file).unwrap_err();
    let Unusable::Sql(err) = err else {
        panic!("{err:?}")
    };
    assert!(!is_unwritable(&err), "{err}");
    let said = refusal(&dir, err.into()).to_string();
    let file = file.to_string_lossy();
    // `.dump`, as `.recover` fails on Debian 12's sqlite3; and a check
    // of what was saved before it replaces the file.
    assert!(
        said.contains(&format!("sqlite3 {file} .dump | sed ")),
        "{said}"
    );
    assert!(!said.contains(".recover |"), "{said}");
    // `.dump` does not keep the version, and the copy is not stamped with
    // this one: its tables are the damaged file's, of its own version, and
    // an unstamped file is known by its tables.
    assert!(!said.contains("pragma user_version"), "{said}");
    assert!(
        said.contains(&format!(
            "check that {file}.recovered has your rooms (sqlite3 {file}.recovered \
             'select count(*) from lines') before moving it"
        )),
        "{said}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn past_the_last_room_number_a_new_room_takes_the_lowest_free_one() {
    let mut conn = memory();
    let now = SystemTime::now();
    let last = i64::MAX / ROOM_SPAN - 1;
    conn.execute(
        "INSERT INTO rooms (id, key, name, topic) VALUES (?1, '#high', '#High', 'up')",
        [last],
    )
    .unwrap();
    let mut known = Known::default();
    write_batch(
        &mut conn,
        &[
            line("#High", "chat a top\n", now),
            line("#Tea", "chat a green\n", now),
        ],
        &mut known,
    )
    .unwrap();
    write_batch(
        &mut conn,
        &[line("#Mint", "chat a fresh\n", now)],
        &mut known,
    )
    .unwrap();
    let number = |key: &str| -> i64 {
        conn.query_row("SELECT id FROM rooms WHERE key = ?1", [key], |row| {
            row.get(0)
        })
        .unwrap()
    };
    assert_eq!((number("#tea"), number("#mint")), (1, 2));
    let loaded = load(&conn, &retention(50, 1 << 20, 30), now).unwrap();
    let lines: Vec<_> = loaded.rooms.iter().map(texts).collect();
    assert_eq!(
        lines,
        [
            vec!["chat a top\n"],
            vec!["chat a fresh\n"],
            vec!["chat a green\n"]
        ]
    );
    // Past the bound is a room with no numbers left, never a file
    // "of a newer version".
    let dir = Path::new("/nowhere");
    let err = span_of(last + 1).unwrap_err();
    assert!(
        matches!(refusal(dir, err.into()), StoreError::Damaged { .. }),
        "not TooNew"
    );
}

//! Lines said together on one node travel and are kept together: one
//! history entry and one message per batch. A node delivers each line
//! once and in order however batches meet what it has already (a batch
//! straddling the next line it expects, a gap that starts inside an
//! entry, entries trimmed away), and reads histories kept one line per
//! entry, as servers kept them before batches.

use super::*;

/// Keeps `lines` in `room` as one entry numbered from `first`, and moves
/// the room's numbering to its last; no node hears of it. In the field
/// `field`: `lines`, framed, as the servers' script keeps a batch; or
/// `line`, one line alone, as servers kept lines before batches (or a
/// marker of the room's rules, `v VERSION`).
fn keep(raw: &mut redis::Connection, room: &str, first: u64, field: &str, lines: &[&str]) {
    let kept = match (field, lines) {
        ("lines", [_, ..]) => frame(lines),
        ("line", [line]) => line.to_string(),
        _ => panic!("the field {field} cannot keep {lines:?}"),
    };
    let last = first + lines.len() as u64 - 1;
    redis::pipe()
        .cmd("XADD")
        .arg(format!("room:{{{room}}}:history"))
        .arg(format!("{first}-0"))
        .arg("node")
        .arg("ghost")
        .arg(field)
        .arg(kept)
        .ignore()
        .cmd("SET")
        .arg(format!("room:{{{room}}}:seq"))
        .arg(last)
        .ignore()
        .exec(raw)
        .expect("kept");
}

/// Publishes `lines` on `room`'s channel as numbered from `first`, as
/// the script does, without keeping them.
fn tell(raw: &mut redis::Connection, room: &str, first: u64, lines: &[&str]) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("room:{{{room}}}"))
        .arg(format!("{first} ghost {}", frame(lines)))
        .query(raw)
        .expect("PUBLISH");
}

/// Joins `room` and waits until the node has done with joining: its
/// first line there (seq 1) is back, so that what the test then writes
/// by hand is not read with the room's past.
fn settle(link: &RedisLink, deliveries: &Receiver<Delivery>, room: &str) {
    join(link, deliveries, room);
    publish(link, room, "first");
    let seen = collect(deliveries, |seen| line_count(seen) == 1);
    assert_eq!(lines(&seen), numbered(1, &["first"]));
}

/// `lines` numbered from `first`, as (seq, line).
fn numbered(first: u64, lines: &[&str]) -> Vec<(u64, String)> {
    (first..)
        .zip(lines.iter().map(|line| line.to_string()))
        .collect()
}

/// A batch whose first lines the node has already is cut to the rest;
/// one it has wholly is dropped; a gap before one is filled from the
/// history first, the entry that ends it cut where the gap ends.
#[test]
fn batches_are_cut_to_what_the_node_has_not_delivered() {
    let redis = Redis::start(&[]);
    let (a, a_in) = start(&redis, "a", quick_link());
    settle(&a, &a_in, "lobby");
    let mut raw = redis.connection(&redis.url());

    // 2..=4 kept but never heard; then 4..=6 heard: the gap 2..=3 comes
    // from the entry 2..=4, cut to 2..=3, then the batch whole.
    keep(&mut raw, "lobby", 2, "lines", &["h2", "h3", "h4"]);
    tell(&mut raw, "lobby", 4, &["h4", "m5", "m6"]);
    let seen = collect(&a_in, |seen| line_count(seen) == 5);
    assert_eq!(
        seen,
        [
            Delivery::Lines {
                room: "lobby".into(),
                first: 2,
                node: "ghost".into(),
                lines: vec!["h2".into(), "h3".into()],
            },
            Delivery::Lines {
                room: "lobby".into(),
                first: 4,
                node: "ghost".into(),
                lines: vec!["h4".into(), "m5".into(), "m6".into()],
            },
        ]
    );
    // A batch straddling the next line expected (7): from 7 on only.
    tell(&mut raw, "lobby", 6, &["m6", "m7", "m8"]);
    // Wholly delivered already: nothing.
    tell(&mut raw, "lobby", 3, &["h3", "h4"]);
    // The numbering where the told lines left it, and a line said.
    keep(&mut raw, "lobby", 7, "lines", &["m7", "m8"]);
    publish(&a, "lobby", "said");
    let seen = collect(&a_in, |seen| line_count(seen) == 3);
    assert_eq!(
        flat(&seen),
        [
            (7, "ghost".into(), "m7".into()),
            (8, "ghost".into(), "m8".into()),
            (9, "a".into(), "said".into()),
        ]
    );
    assert!(a_in.recv_timeout(Duration::from_millis(300)).is_err());
}

/// The gap may start inside an entry: its lines before the gap are not
/// delivered again, those after are.
#[test]
fn a_gap_that_starts_inside_an_entry_is_filled_from_there() {
    let redis = Redis::start(&[]);
    let (a, a_in) = start(&redis, "a", quick_link());
    join(&a, &a_in, "lobby");
    let mut raw = redis.connection(&redis.url());

    // The node hears line 1 alone, then 2..=4 go unheard, kept in the
    // one entry of 1..=3 and one of 4.
    tell(&mut raw, "lobby", 1, &["x1"]);
    assert_eq!(
        lines(&collect(&a_in, |seen| line_count(seen) == 1)),
        numbered(1, &["x1"])
    );
    keep(&mut raw, "lobby", 1, "lines", &["x1", "x2", "x3"]);
    keep(&mut raw, "lobby", 4, "lines", &["x4"]);
    tell(&mut raw, "lobby", 5, &["x5"]);
    let seen = collect(&a_in, |seen| line_count(seen) == 4);
    assert_eq!(lines(&seen), numbered(2, &["x2", "x3", "x4", "x5"]));
    assert!(matches!(&seen[0], Delivery::Lines { first: 2, lines, .. } if lines.len() == 2));
}

/// Lines whose entries were trimmed before the node could read them are
/// missed, as many as they held; the rest comes in order.
#[test]
fn lines_of_trimmed_entries_are_missed() {
    let redis = Redis::start(&[]);
    let (a, a_in) = start(&redis, "a", quick_link());
    settle(&a, &a_in, "lobby");
    let mut raw = redis.connection(&redis.url());

    keep(&mut raw, "lobby", 2, "lines", &["t2"]);
    keep(&mut raw, "lobby", 3, "lines", &["t3", "t4", "t5"]);
    keep(&mut raw, "lobby", 6, "lines", &["k6", "k7"]);
    let _: i64 = redis::cmd("XTRIM")
        .arg("room:{lobby}:history")
        .arg("MAXLEN")
        .arg(1)
        .query(&mut raw)
        .expect("XTRIM");
    tell(&mut raw, "lobby", 8, &["m8"]);
    let seen = collect(&a_in, |seen| line_count(seen) == 3);
    assert_eq!(
        seen[0],
        Delivery::Missed {
            room: "lobby".into(),
            from: 2,
            to: 5
        }
    );
    assert_eq!(lines(&seen), numbered(6, &["k6", "k7", "m8"]));
}

/// A node joining a room is told its last lines across entries of
/// batches, entries of one line kept before batches, and markers of its
/// rules, which are no lines.
#[test]
fn recent_lines_are_read_across_batches_old_entries_and_markers() {
    let redis = Redis::start(&[]);
    let mut raw = redis.connection(&redis.url());
    for (recent, expected) in [
        (4, vec!["c", "d", "e", "f"]),
        (1, vec!["f"]),
        (3, vec!["d", "e", "f"]),
        (10, vec!["a", "b", "c", "d", "e", "f"]),
    ] {
        let room = format!("past{recent}");
        keep(&mut raw, &room, 1, "lines", &["a", "b", "c"]);
        keep(&mut raw, &room, 4, "line", &["v 1"]);
        keep(&mut raw, &room, 5, "lines", &["d", "e"]);
        keep(&mut raw, &room, 7, "line", &["f"]);
        let settings = LinkSettings {
            recent,
            ..quick_link()
        };
        let (a, a_in) = start(&redis, "a", settings);
        match join(&a, &a_in, &room) {
            Delivery::Recent { lines, .. } => assert_eq!(lines, expected, "recent {recent}"),
            other => panic!("{other:?}"),
        }
        // The node goes on from the numbering, in the same history.
        publish(&a, &room, "next");
        let seen = collect(&a_in, |seen| line_count(seen) == 1);
        assert_eq!(lines(&seen), numbered(8, &["next"]));
    }
}

//! What the link keeps in Redis is bounded: a room's keys lapse once it is
//! empty and quiet, its history is capped in bytes, a node number nothing
//! made is refused, and names held and let go go to Redis in batches.

use super::*;

/// The keys a room leaves in Redis, by the names the link gives them.
fn room_keys(room: &str) -> Vec<String> {
    ["seq", "history", "senders", "topic", "size", "lines"]
        .iter()
        .map(|part| format!("room:{{{room}}}:{part}"))
        .collect()
}

/// `room`'s keys lapse, as if nobody had renewed them: all but the
/// senders' counts. On a loaded machine the publisher may still be
/// retrying the call whose reply came late, and without its count Redis
/// would number those lines again. (Keys lapse only after a quiet spell,
/// when no call is in flight.)
fn lapse(raw: &mut redis::Connection, room: &str) {
    let lapsed: Vec<_> = room_keys(room)
        .into_iter()
        .filter(|key| !key.ends_with(":senders"))
        .collect();
    redis::cmd("DEL").arg(lapsed).exec(raw).expect("DEL");
}

/// How long `key` has left, in ms: -1 if it never expires, -2 if it is gone.
fn pttl(connection: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(connection).expect("PTTL")
}

/// A room's keys live as long as a node has members in it, however quiet,
/// and lapse once nobody is in it nor speaks there for the room expiry:
/// a guest cannot fill Redis for ever with rooms made and left.
///
/// The node renews every third of the expiry. The test does not bet on
/// when: it watches the keys' time left go back up, twice, and checks at
/// every look that none lapsed; the expiry leaves seconds of slack for a
/// busy machine.
#[test]
fn a_rooms_keys_lapse_once_it_is_empty_and_quiet() {
    const EXPIRY: Duration = Duration::from_secs(6);
    let redis = Redis::start(&[]);
    let settings = LinkSettings {
        room_ttl: EXPIRY,
        ..quick_link()
    };
    let (a, a_in) = start(&redis, "a", settings);
    join(&a, &a_in, "new1");
    a.publish_topic("new1", "topic set", "made by a guest")
        .expect("topic");
    publish(&a, "new1", "hello");
    collect(&a_in, |seen| line_count(seen) == 2);
    let mut raw = redis.connection(&redis.url());
    let most = i64::try_from(EXPIRY.as_millis()).expect("ms");
    for key in room_keys("new1") {
        let left = pttl(&mut raw, &key);
        assert!((1..=most).contains(&left), "{key}: {left} ms left");
    }
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec(&mut raw)
        .expect("CONFIG RESETSTAT");
    // Quiet, with a member: the node renews the keys, and none lapses.
    let deadline = Instant::now() + TIMEOUT;
    let mut renewals = 0;
    let mut last = pttl(&mut raw, "room:{new1}:seq");
    while renewals < 2 {
        for key in room_keys("new1") {
            assert!(
                pttl(&mut raw, &key) > 0,
                "{key} lapsed while a node was in it"
            );
        }
        let left = pttl(&mut raw, "room:{new1}:seq");
        if left > last {
            renewals += 1;
        }
        last = left;
        assert!(Instant::now() < deadline, "renewed {renewals} times");
        thread::sleep(Duration::from_millis(50));
    }
    // Renewed with the script Redis keeps, not sent whole each time.
    assert_eq!(redis.calls("eval"), 0, "EVAL with the whole script");
    assert!(redis.calls("evalsha") >= 2, "no renewal by EVALSHA");
    a.leave_room("new1");
    redis.wait_subscribed("new1", 0);
    for key in room_keys("new1") {
        while pttl(&mut raw, &key) != -2 {
            assert!(Instant::now() < deadline, "{key} still there");
            thread::sleep(Duration::from_millis(50));
        }
    }
    // Said again later, the room starts over, from 1.
    join(&a, &a_in, "new1");
    publish(&a, "new1", "again");
    let seen = collect(&a_in, |seen| line_count(seen) == 1);
    assert_eq!(lines(&seen), vec![(1, "again".to_owned())]);
}

/// A room whose keys lapsed while a node was in it (renewals that could
/// not reach Redis in time) numbers its lines from 1 again: the node
/// takes that for a new numbering, not for lines it had already.
#[test]
fn a_room_whose_keys_lapsed_starts_over_from_1() {
    let redis = Redis::start(&[]);
    let (a, a_in) = start(&redis, "a", quick_link());
    join(&a, &a_in, "lapsed");
    for n in 1..=3 {
        publish(&a, "lapsed", &format!("before {n}"));
    }
    collect(&a_in, |seen| line_count(seen) == 3);
    let mut raw = redis.connection(&redis.url());
    lapse(&mut raw, "lapsed");
    publish(&a, "lapsed", "after 1");
    publish(&a, "lapsed", "after 2");
    let seen = collect(&a_in, |seen| line_count(seen) == 2);
    assert_eq!(
        lines(&seen),
        vec![(1, "after 1".to_owned()), (2, "after 2".to_owned())]
    );
}

/// A message of a room's old numbering read late, after its keys lapsed
/// and before the new numbering has as many lines, is not taken for the
/// new numbering's first: its lines were delivered already.
#[test]
fn a_late_message_of_a_lapsed_numbering_is_not_delivered_again() {
    let redis = Redis::start(&[]);
    let (a, a_in) = start(&redis, "a", quick_link());
    join(&a, &a_in, "late");
    for n in 1..=3 {
        publish(&a, "late", &format!("before {n}"));
    }
    let before = collect(&a_in, |seen| line_count(seen) == 3);
    let mut raw = redis.connection(&redis.url());
    lapse(&mut raw, "late");
    // The old numbering's lines, as one message from 1, as if the
    // subscriber had read it only now.
    let old = lines(&before);
    let old: Vec<&str> = old.iter().map(|(_, line)| line.as_str()).collect();
    let message = format!("1 a {}", frame(&old));
    redis::cmd("PUBLISH")
        .arg("room:{late}")
        .arg(message)
        .exec(&mut raw)
        .expect("PUBLISH");
    publish(&a, "late", "after 1");
    publish(&a, "late", "after 2");
    let seen = collect(&a_in, |seen| line_count(seen) == 2);
    assert_eq!(
        lines(&seen),
        vec![(1, "after 1".to_owned()), (2, "after 2".to_owned())]
    );
}

/// The same, when the new numbering has already reached the old
/// message's lines: what tells them apart is the new numbering's first
/// entry, kept before its message went out.
#[test]
fn a_late_message_is_told_from_the_new_numberings_first_by_its_entry() {
    let redis = Redis::start(&[]);
    let (a, a_in) = start(&redis, "a", quick_link());
    join(&a, &a_in, "late2");
    for n in 1..=3 {
        publish(&a, "late2", &format!("before {n}"));
    }
    collect(&a_in, |seen| line_count(seen) == 3);
    let mut raw = redis.connection(&redis.url());
    lapse(&mut raw, "late2");
    // A new numbering's first line, as its script keeps it; then the old
    // numbering's first message, read late; then the new one's.
    let new_first = frame(&["after 1"]);
    redis::cmd("SET")
        .arg("room:{late2}:seq")
        .arg(1)
        .exec(&mut raw)
        .expect("SET");
    redis::cmd("XADD")
        .arg("room:{late2}:history")
        .arg("1-0")
        .arg("node")
        .arg("a")
        .arg("lines")
        .arg(&new_first)
        .exec(&mut raw)
        .expect("XADD");
    // Between them, the same lines from another server: not the entry.
    for message in [
        format!("1 a {}", frame(&["before 1"])),
        format!("1 b {new_first}"),
        format!("1 a {new_first}"),
    ] {
        redis::cmd("PUBLISH")
            .arg("room:{late2}")
            .arg(message)
            .exec(&mut raw)
            .expect("PUBLISH");
    }
    publish(&a, "late2", "after 2");
    let seen = collect(&a_in, |seen| line_count(seen) == 2);
    assert_eq!(
        flat(&seen),
        vec![
            (1, "a".to_owned(), "after 1".to_owned()),
            (2, "a".to_owned(), "after 2".to_owned())
        ]
    );
}

/// A node's first line in a room renews the room's keys, even where it
/// has no member (a notice said before its user enters), so that a room
/// spoken in keeps at least half its expiry; later lines of the node do
/// not, until half the expiry has gone: no renewal per line.
#[test]
fn a_nodes_first_line_in_a_room_renews_its_keys_not_every_line() {
    let redis = Redis::start(&[]);
    let (a, _a_in) = start(&redis, "a", quick_link());
    let (b, _b_in) = start(&redis, "b", quick_link());
    let mut raw = redis.connection(&redis.url());
    let seq_is = |raw: &mut redis::Connection, seq: u64| {
        let reached = secure_chat_test_support::wait_until(|| {
            let now: Option<u64> = redis::cmd("GET")
                .arg("room:{aside}:seq")
                .query(raw)
                .expect("GET");
            now == Some(seq)
        });
        assert!(reached, "line {seq} never numbered");
    };
    let shorten = |raw: &mut redis::Connection| {
        for key in room_keys("aside") {
            let _: i64 = redis::cmd("PEXPIRE")
                .arg(&key)
                .arg(2_000)
                .query(raw)
                .expect("PEXPIRE");
        }
    };
    // Neither node has a member there.
    publish(&b, "aside", "first");
    seq_is(&mut raw, 1);
    shorten(&mut raw);
    publish(&a, "aside", "second");
    seq_is(&mut raw, 2);
    for key in room_keys("aside") {
        if key.ends_with(":topic") {
            continue;
        }
        let left = pttl(&mut raw, &key);
        assert!(left > 60_000, "{key}: {left} ms left after a's first line");
    }
    shorten(&mut raw);
    publish(&a, "aside", "third");
    seq_is(&mut raw, 3);
    let left = pttl(&mut raw, "room:{aside}:seq");
    assert!(
        (1..=2_000).contains(&left),
        "renewed again at once: {left} ms"
    );
}

/// A room's history keeps at most so many bytes of lines, the newest.
#[test]
fn a_rooms_history_is_capped_in_bytes() {
    const CAP: usize = 10_000;
    const LINE: usize = 1_000;
    let redis = Redis::start(&[]);
    let settings = LinkSettings {
        history_bytes: CAP,
        recent: 1_000,
        ..quick_link()
    };
    let (a, a_in) = start(&redis, "a", settings.clone());
    join(&a, &a_in, "big");
    for n in 0..100 {
        publish(&a, "big", &format!("{n:04} {}", "x".repeat(LINE - 5)));
    }
    // Until the last line is back: under load the first lines may reach
    // this node as a gap, which a history this small cannot fill, and
    // that is no matter here.
    collect(&a_in, |seen| {
        seen.iter().any(|delivery| {
            lines(std::slice::from_ref(delivery))
                .iter()
                .any(|(seq, _)| *seq == 100)
        })
    });
    let mut raw = redis.connection(&redis.url());
    let kept: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg("room:{big}:history")
        .arg("-")
        .arg("+")
        .query(&mut raw)
        .expect("XRANGE");
    // Lines said together are kept together, as one entry: only whole
    // entries go, the oldest first.
    let bytes: usize = kept.iter().map(|(_, fields)| fields["lines"].len()).sum();
    assert!(
        bytes <= CAP || kept.len() == 1,
        "{bytes} bytes kept in {} entries",
        kept.len()
    );
    let held: Vec<String> = kept
        .iter()
        .flat_map(|(_, fields)| unframe(&fields["lines"]))
        .collect();
    assert!(held.last().expect("some kept").starts_with("0099 "));
    // The newest, in order, with no hole.
    for (n, line) in (100 - held.len()..).zip(&held) {
        assert!(line.starts_with(&format!("{n:04} ")), "{n}: {}", &line[..4]);
    }
    let size: usize = redis::cmd("GET")
        .arg("room:{big}:size")
        .query(&mut raw)
        .expect("GET");
    assert_eq!(size, bytes, "the count kept beside the history");
    let count: usize = redis::cmd("GET")
        .arg("room:{big}:lines")
        .query(&mut raw)
        .expect("GET");
    assert_eq!(count, held.len(), "the lines counted beside the history");
    // The trim keeps the room's expiry on what it rewrote.
    for key in room_keys("big") {
        if key.ends_with(":topic") {
            continue;
        }
        let left = pttl(&mut raw, &key);
        assert!(left > 0, "{key}: {left} ms left after a trim");
    }
    // A newcomer is told what is kept.
    let (b, b_in) = start(&redis, "b", settings);
    match join(&b, &b_in, "big") {
        Delivery::Recent { lines, .. } => assert_eq!(lines, held),
        other => panic!("{other:?}"),
    }
}

/// A `chat:nodes` no chat server made (10^17 made the guest-name search
/// loop for ever on the hub thread): refused at start, in one line.
#[test]
fn a_node_number_no_server_made_is_refused() {
    let redis = Redis::start(&[]);
    let mut raw = redis.connection(&redis.url());
    redis::cmd("SET")
        .arg("chat:nodes")
        .arg("100000000000000000")
        .exec(&mut raw)
        .expect("SET");
    match RedisLink::start(&redis.url(), "a", quick_link()) {
        Err(error @ LinkError::NodeNumber { .. }) => {
            let message = error.to_string();
            assert!(message.contains("chat:nodes"), "{message}");
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("started with node number 10^17 + 1"),
    }
}

/// Arrivals and departures faster than round trips to Redis: names held
/// and let go are told Redis a batch per round trip, not one each, so
/// churn cannot pile them up behind a slow Redis (nor hold back anything
/// else the names thread does).
#[test]
fn names_held_and_let_go_go_to_redis_in_batches() {
    const NAMES: usize = 5_000;
    let redis = Redis::start(&[]);
    let (a, _a_in) = start(&redis, "a", quick_link());
    let mut raw = redis.connection(&redis.url());
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec(&mut raw)
        .expect("CONFIG RESETSTAT");
    for n in 0..NAMES {
        a.hold_name(&format!("guest1-{n}"));
    }
    for n in 0..NAMES / 2 {
        a.release_name(&format!("guest1-{n}"));
    }
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("name:*")
            .query(&mut raw)
            .expect("KEYS");
        // The second half held, the first let go (on the way there, the
        // count can pass NAMES / 2 with other names).
        let second_half = keys.iter().all(|key| {
            // `name:{bK}:guest1-N`
            let n: usize = key
                .rsplit_once(":guest1-")
                .expect("a guest's name")
                .1
                .parse()
                .expect("a number");
            n >= NAMES / 2
        });
        if keys.len() == NAMES / 2 && second_half {
            break;
        }
        assert!(Instant::now() < deadline, "{} names held", keys.len());
        thread::sleep(Duration::from_millis(20));
    }
    let calls = redis.calls("eval") + redis.calls("evalsha");
    assert!(
        calls <= (NAMES / 10) as u64,
        "{calls} scripts for {} holds and releases",
        NAMES + NAMES / 2
    );
    eprintln!(
        "{calls} scripts for {} holds and releases",
        NAMES + NAMES / 2
    );
}

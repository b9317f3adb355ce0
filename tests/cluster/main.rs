//! The Redis link (src/linked/redis_link/) against a real Redis: each test starts
//! its own `redis-server` on a free loopback port, in a directory of its
//! own, and stops it by its process id.
//!
//! What is checked: every node delivers every line of its rooms once, in
//! the one order Redis numbered them, under concurrent publishers; lines
//! lost on the way are read back from the history first; Redis going away
//! and coming back (with its data, or without), and Redis cutting a slow
//! subscriber, end with nothing lost and nothing twice; and a Redis that
//! is not there, or refuses the password, is one clear line at start.

// Linked servers only: built with the `redis` feature (on by default).
#![cfg(feature = "redis")]

// What the link keeps in Redis is bounded: `bounds.rs`. Lines said
// together travel and are kept together: `batches.rs`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use secure_chat::linked::redis_link::{
    Delivery, LinkError, LinkSettings, RedisLink, Refused, RulesCopy,
};
use secure_chat_test_support::{frame, free_port, quick_link, unframe, Pki, Redis};

/// The longest any one wait in these tests may take.
const TIMEOUT: Duration = Duration::from_secs(20);

fn start(redis: &Redis, node: &str, settings: LinkSettings) -> (RedisLink, Receiver<Delivery>) {
    RedisLink::start(&redis.url(), node, settings).unwrap_or_else(|error| panic!("{error}"))
}

/// Takes deliveries until `done` says so, for at most [`TIMEOUT`]; what
/// a room had said before the node joined ([`Delivery::Recent`]) is left
/// out, for the test of it to see.
fn collect(
    deliveries: &Receiver<Delivery>,
    mut done: impl FnMut(&[Delivery]) -> bool,
) -> Vec<Delivery> {
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match deliveries.recv_timeout(left) {
            Ok(Delivery::Recent { .. }) => {}
            Ok(delivery) => seen.push(delivery),
            Err(_) => panic!("timed out; so far: {seen:?}"),
        }
    }
    seen
}

/// Joins `room` and waits for what it said before ([`Delivery::Recent`]):
/// the link subscribes before it reads the past, so from then on every
/// new line of the room comes in a [`Delivery::Lines`]. Waiting only for
/// the subscription would race: a line published between the subscribe
/// and the read of the past is delivered inside `Recent`, which
/// [`collect`] leaves out.
fn join(link: &RedisLink, deliveries: &Receiver<Delivery>, room: &str) -> Delivery {
    link.join_room(room);
    match deliveries.recv_timeout(TIMEOUT) {
        Ok(recent @ Delivery::Recent { .. }) => recent,
        other => panic!("joining {room}: expected its past first, got {other:?}"),
    }
}

/// The lines among `deliveries`, each batch opened: (seq, node, line)
/// in the order delivered.
fn flat(deliveries: &[Delivery]) -> Vec<(u64, String, String)> {
    let mut flat = Vec::new();
    for delivery in deliveries {
        if let Delivery::Lines {
            first, node, lines, ..
        } = delivery
        {
            assert!(!lines.is_empty(), "a batch of no lines");
            let numbered = (*first..).zip(lines);
            flat.extend(numbered.map(|(seq, line)| (seq, node.clone(), line.clone())));
        }
    }
    flat
}

/// The lines among `deliveries`, as (seq, line).
fn lines(deliveries: &[Delivery]) -> Vec<(u64, String)> {
    flat(deliveries)
        .into_iter()
        .map(|(seq, _, line)| (seq, line))
        .collect()
}

fn line_count(deliveries: &[Delivery]) -> usize {
    lines(deliveries).len()
}

/// Seqs must be exactly 1..=n, in order.
fn assert_numbered(lines: &[(u64, String)], n: u64) {
    let seqs: Vec<u64> = lines.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
}

/// Publishes, waiting while the outbox is full (a test publishes faster
/// than any user).
fn publish(link: &RedisLink, room: &str, line: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match link.publish(room, line) {
            Ok(()) => return,
            Err(Refused::Full) if Instant::now() < deadline => thread::yield_now(),
            Err(refused) => panic!("publish refused: {refused}"),
        }
    }
}

/// Numbers and keeps a line as servers did before they kept batches (an
/// entry of one line, in the field `line`), but no node hears of it, as
/// when pub/sub loses a message: histories written so are still read.
fn append_silently(connection: &mut redis::Connection, room: &str, line: &str) -> u64 {
    let script = redis::Script::new(
        r"local seq = redis.call('INCR', KEYS[1])
          redis.call('XADD', KEYS[2], string.format('%d-0', seq), 'node', 'ghost', 'line', ARGV[1])
          return seq",
    );
    script
        .key(format!("room:{{{room}}}:seq"))
        .key(format!("room:{{{room}}}:history"))
        .arg(line)
        .invoke(connection)
        .expect("silent append")
}

#[test]
fn concurrent_publishers_one_order_everywhere() {
    let redis = Redis::start(&[]);
    let (a, a_in) = start(&redis, "a", quick_link());
    let (b, b_in) = start(&redis, "b", quick_link());
    join(&a, &a_in, "lobby");
    join(&b, &b_in, "lobby");

    const EACH: usize = 500;
    let started = Instant::now();
    thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..EACH {
                publish(&a, "lobby", &format!("from a {i}"));
            }
        });
        scope.spawn(|| {
            for i in 0..EACH {
                publish(&b, "lobby", &format!("from b {i}"));
            }
        });
    });
    let total = 2 * EACH;
    let seen_a = lines(&collect(&a_in, |seen| line_count(seen) == total));
    let seen_b = lines(&collect(&b_in, |seen| line_count(seen) == total));
    eprintln!(
        "{total} lines through Redis to two nodes in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    assert_numbered(&seen_a, total as u64);
    // The same order on both nodes, line for line.
    assert_eq!(seen_a, seen_b);
    // Every line once, and each publisher's own lines in the order it sent.
    let distinct: HashSet<&str> = seen_a.iter().map(|(_, line)| line.as_str()).collect();
    assert_eq!(distinct.len(), total);
    for node in ["a", "b"] {
        let prefix = format!("from {node} ");
        let own: Vec<usize> = seen_a
            .iter()
            .filter_map(|(_, line)| line.strip_prefix(&prefix)?.parse().ok())
            .collect();
        assert_eq!(own, (0..EACH).collect::<Vec<_>>(), "node {node}");
    }
    // Nothing more: no duplicate arrives late.
    assert!(a_in.recv_timeout(Duration::from_millis(300)).is_err());
    assert!(b_in.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn a_lost_message_is_filled_from_history_first() {
    let redis = Redis::start(&[]);
    let (a, a_in) = start(&redis, "a", quick_link());
    let (b, b_in) = start(&redis, "b", quick_link());
    join(&a, &a_in, "lobby");
    join(&b, &b_in, "lobby");
    // Only b in this one: its lines must not reach a.
    join(&b, &b_in, "side");

    let mut raw = redis.connection(&redis.url());
    for i in 1..=3 {
        assert_eq!(append_silently(&mut raw, "lobby", &format!("lost {i}")), i);
    }
    // Seq 4 arrives by pub/sub; 1 to 3 must come first, from the history.
    publish(&a, "lobby", "said");
    publish(&b, "side", "aside");
    let expected = vec![
        (1, "lost 1".to_owned()),
        (2, "lost 2".to_owned()),
        (3, "lost 3".to_owned()),
        (4, "said".to_owned()),
    ];
    // b hears two rooms; their lines may interleave either way.
    for (deliveries, count) in [(&a_in, 4), (&b_in, 5)] {
        let seen = collect(deliveries, |seen| line_count(seen) == count);
        let lobby: Vec<Delivery> = seen
            .iter()
            .filter(|d| matches!(d, Delivery::Lines { room, .. } if room == "lobby"))
            .cloned()
            .collect();
        assert_eq!(lines(&lobby), expected);
        assert_eq!(flat(&lobby)[3].1, "a");
        let side: Vec<Delivery> = seen
            .iter()
            .filter(|d| matches!(d, Delivery::Lines { room, .. } if room == "side"))
            .cloned()
            .collect();
        let expected_side = if count == 5 {
            vec![(1, "aside".to_owned())]
        } else {
            vec![]
        };
        assert_eq!(lines(&side), expected_side);
    }

    // A line trimmed from the history before it could be filled is
    // reported as missed, and the rest still comes in order.
    append_silently(&mut raw, "lobby", "kept 5");
    append_silently(&mut raw, "lobby", "trimmed 6");
    let _: i64 = redis::cmd("XDEL")
        .arg("room:{lobby}:history")
        .arg("6-0")
        .query(&mut raw)
        .expect("XDEL");
    publish(&b, "lobby", "said 7");
    let seen = collect(&a_in, |seen| line_count(seen) == 2);
    assert_eq!(
        seen,
        vec![
            Delivery::Lines {
                room: "lobby".into(),
                first: 5,
                node: "ghost".into(),
                lines: vec!["kept 5".into()]
            },
            Delivery::Missed {
                room: "lobby".into(),
                from: 6,
                to: 6
            },
            Delivery::Lines {
                room: "lobby".into(),
                first: 7,
                node: "b".into(),
                lines: vec!["said 7".into()]
            },
        ]
    );
    // a never hears of `side`.
    assert!(a_in.recv_timeout(Duration::from_millis(300)).is_err());
}

/// A node joining a room is first told its last lines and topic, from
/// Redis: what any node said there, whether or not this one was in it.
#[test]
fn joining_a_room_brings_its_last_lines_and_topic() {
    let redis = Redis::start(&[]);
    let settings = LinkSettings {
        recent: 3,
        ..quick_link()
    };
    let (a, a_in) = start(&redis, "a", settings.clone());
    assert_eq!(
        join(&a, &a_in, "tea"),
        Delivery::Recent {
            room: "tea".into(),
            lines: vec![],
            topic: None,
            rules: RulesCopy::default(),
        }
    );
    for n in 1..=4 {
        publish(&a, "tea", &format!("line {n}"));
    }
    a.publish_topic("tea", "topic set", "green").expect("topic");
    collect(&a_in, |seen| line_count(seen) == 5);

    let (b, b_in) = start(&redis, "b", settings);
    assert_eq!(
        join(&b, &b_in, "tea"),
        Delivery::Recent {
            room: "tea".into(),
            lines: vec!["line 3".into(), "line 4".into(), "topic set".into()],
            topic: Some("green".into()),
            rules: RulesCopy::default(),
        }
    );
    // And then only what is said from now on.
    publish(&a, "tea", "line 6");
    let seen = collect(&b_in, |seen| line_count(seen) == 1);
    assert_eq!(lines(&seen), vec![(6, "line 6".to_owned())]);
}

#[test]
fn a_room_left_is_no_longer_heard() {
    let redis = Redis::start(&[]);
    let (a, a_in) = start(&redis, "a", quick_link());
    let (b, _b_in) = start(&redis, "b", quick_link());
    join(&a, &a_in, "lobby");
    publish(&b, "lobby", "one");
    assert_eq!(
        lines(&collect(&a_in, |s| line_count(s) == 1)),
        vec![(1, "one".into())]
    );
    a.leave_room("lobby");
    redis.wait_subscribed("lobby", 0);
    publish(&b, "lobby", "two");
    // Joined again: from the next line on, not what was said meanwhile.
    let mut raw = redis.connection(&redis.url());
    let deadline = Instant::now() + TIMEOUT;
    while redis::cmd("GET")
        .arg("room:{lobby}:seq")
        .query::<u64>(&mut raw)
        .expect("GET")
        < 2
    {
        assert!(Instant::now() < deadline, "line two never numbered");
        thread::sleep(Duration::from_millis(10));
    }
    join(&a, &a_in, "lobby");
    publish(&b, "lobby", "three");
    assert_eq!(
        lines(&collect(&a_in, |s| line_count(s) == 1)),
        vec![(3, "three".into())]
    );
}

/// Redis stops, and comes back with its data (an append-only file in its
/// directory). While it is away both nodes are told, and publishing is
/// refused; lines that others wrote meanwhile (here: before the links
/// could log in again) are delivered on reconnection, then `LinkUp`.
#[test]
fn redis_restarted_with_its_data_nothing_lost_nothing_twice() {
    let mut redis = Redis::start(&["--appendonly", "yes"]);
    let (a, a_in) = start(&redis, "a", quick_link());
    let (b, b_in) = start(&redis, "b", quick_link());
    join(&a, &a_in, "lobby");
    join(&b, &b_in, "lobby");
    for i in 1..=10 {
        publish(&a, "lobby", &format!("before {i}"));
    }
    let mut before_a = collect(&a_in, |seen| line_count(seen) == 10);
    let mut before_b = collect(&b_in, |seen| line_count(seen) == 10);

    redis.stop();
    for deliveries in [&a_in, &b_in] {
        let seen = collect(deliveries, |seen| {
            seen.iter().any(|d| matches!(d, Delivery::LinkDown { .. }))
        });
        assert_eq!(seen.len(), 1, "{seen:?}");
    }
    assert_eq!(a.publish("lobby", "while down"), Err(Refused::Down));
    assert!(!b.is_up());

    // Back, but asking for a password the links do not have: they cannot
    // get in until it is cleared, which leaves time to write lines they
    // do not hear of.
    redis.spawn(&["--requirepass", "pw"]);
    let mut raw = redis.connection(&format!("redis://:pw@127.0.0.1:{}", redis.port));
    for i in 11..=15 {
        assert_eq!(
            append_silently(&mut raw, "lobby", &format!("during {i}")),
            i
        );
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("")
        .query(&mut raw)
        .expect("CONFIG SET");

    for (deliveries, before) in [(&a_in, &mut before_a), (&b_in, &mut before_b)] {
        let seen = collect(deliveries, |seen| {
            seen.iter().any(|d| matches!(d, Delivery::LinkUp { .. }))
        });
        assert_eq!(
            seen.last(),
            Some(&Delivery::LinkUp {
                history_lost: false
            })
        );
        before.extend(seen);
    }
    redis.wait_subscribed("lobby", 2);
    publish(&b, "lobby", "after 16");
    for (deliveries, before) in [(&a_in, &mut before_a), (&b_in, &mut before_b)] {
        before.extend(collect(deliveries, |seen| line_count(seen) == 1));
        let all = lines(before);
        assert_numbered(&all, 16);
        assert_eq!(all[10].1, "during 11");
        assert_eq!(all[15].1, "after 16");
    }
}

/// Redis comes back empty: the links notice the new data set, say the
/// history is lost, and go on from the new numbering.
#[test]
fn redis_restarted_without_data_numbering_starts_over() {
    let mut redis = Redis::start(&["--appendonly", "no"]);
    let (a, a_in) = start(&redis, "a", quick_link());
    join(&a, &a_in, "lobby");
    publish(&a, "lobby", "old");
    collect(&a_in, |seen| line_count(seen) == 1);

    redis.stop();
    collect(&a_in, |seen| {
        seen.iter().any(|d| matches!(d, Delivery::LinkDown { .. }))
    });
    redis.spawn(&[]);
    let seen = collect(&a_in, |seen| {
        seen.iter().any(|d| matches!(d, Delivery::LinkUp { .. }))
    });
    assert_eq!(seen, vec![Delivery::LinkUp { history_lost: true }]);
    redis.wait_subscribed("lobby", 1);
    publish(&a, "lobby", "new");
    let seen = collect(&a_in, |seen| line_count(seen) == 1);
    assert_eq!(lines(&seen), vec![(1, "new".to_owned())]);
}

/// A node that does not keep up is cut off by Redis (its pub/sub output
/// buffer limit); once it reads again, it reconnects and fills in what it
/// missed: every line once, in order.
#[test]
fn a_slow_subscriber_cut_off_by_redis_catches_up() {
    let redis = Redis::start(&["--client-output-buffer-limit", "pubsub 64kb 0 0"]);
    // A history that keeps everything published here, however many lines
    // of 4 KiB it takes to get b cut off.
    let settings = LinkSettings {
        history: 100_000,
        history_bytes: 1 << 30,
        ..quick_link()
    };
    let (a, a_in) = start(&redis, "a", settings.clone());
    // b's hub "stalls": it holds one delivery and reads no more.
    let (b, b_in) = start(
        &redis,
        "b",
        LinkSettings {
            deliveries: 1,
            ..settings
        },
    );
    join(&a, &a_in, "lobby");
    join(&b, &b_in, "lobby");

    // a's deliveries are read all along.
    let seen_a = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let seen_a = Arc::clone(&seen_a);
        thread::spawn(move || {
            while let Ok(delivery) = a_in.recv_timeout(TIMEOUT) {
                seen_a
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(delivery);
            }
        })
    };
    let a_lines = || line_count(&seen_a.lock().unwrap_or_else(PoisonError::into_inner));

    // Lines of 4 KiB, until Redis has cut b off (b's socket buffers must
    // fill first, so how many it takes depends on the kernel).
    let padding = "x".repeat(4096);
    let mut published = 0;
    let deadline = Instant::now() + TIMEOUT;
    while redis.subscribers("lobby") == 2 {
        assert!(published < 50_000, "Redis never cut the slow subscriber");
        for _ in 0..500 {
            published += 1;
            publish(&a, "lobby", &format!("{published} {padding}"));
        }
        while a_lines() < published {
            assert!(Instant::now() < deadline, "a is behind");
            thread::sleep(Duration::from_millis(5));
        }
    }
    let seen_b = collect(&b_in, |seen| {
        line_count(seen) == published && seen.iter().any(|d| matches!(d, Delivery::LinkUp { .. }))
    });
    assert!(seen_b
        .iter()
        .any(|d| matches!(d, Delivery::LinkDown { .. })));
    let seen_b = lines(&seen_b);
    assert_numbered(&seen_b, published as u64);
    for (seq, line) in &seen_b {
        assert!(line.starts_with(&format!("{seq} ")));
    }
    eprintln!("b was cut off by Redis and caught up {published} lines");
    drop(a);
    reader.join().expect("reader");
    assert_numbered(
        &lines(&seen_a.lock().unwrap_or_else(PoisonError::into_inner)),
        published as u64,
    );
}

/// A Redis that stops answering (paused) is noticed by the PING, though
/// the connection stays open; when it answers again, the link is back.
#[test]
fn an_unanswering_redis_is_noticed_by_ping() {
    let redis = Redis::start(&[]);
    let (a, a_in) = start(&redis, "a", quick_link());
    join(&a, &a_in, "lobby");
    let mut raw = redis.connection(&redis.url());
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("ALL")
        .query(&mut raw)
        .expect("CLIENT PAUSE");
    let seen = collect(&a_in, |seen| {
        seen.iter().any(|d| matches!(d, Delivery::LinkUp { .. }))
    });
    assert!(matches!(seen[0], Delivery::LinkDown { .. }), "{seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");
    redis.wait_subscribed("lobby", 1);
    publish(&a, "lobby", "still here");
    assert_eq!(
        lines(&collect(&a_in, |s| line_count(s) == 1)),
        vec![(1, "still here".to_owned())]
    );
}

#[test]
fn no_redis_at_start_is_one_clear_line() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let error = RedisLink::start(&url, "a", quick_link()).expect_err("nothing listens there");
    assert!(matches!(error, LinkError::Unreachable { .. }), "{error:?}");
    let message = error.to_string();
    eprintln!("{message}");
    assert!(
        message.starts_with(&format!("cannot reach Redis at 127.0.0.1:{port}: ")),
        "{message}"
    );
    assert!(!message.contains('\n'));

    let error = RedisLink::start("localhost:6379", "a", quick_link()).expect_err("no scheme");
    assert!(matches!(error, LinkError::BadUrl), "{error:?}");
    let error = RedisLink::start(&url, "has space", quick_link()).expect_err("bad name");
    assert!(matches!(error, LinkError::BadNodeName(_)), "{error:?}");
}

#[test]
fn a_wrong_password_is_a_clear_error_without_it() {
    let redis = Redis::start(&["--requirepass", "right-one"]);
    for url in [
        format!("redis://:wrong-one@127.0.0.1:{}", redis.port),
        format!("redis://default:wrong-one@127.0.0.1:{}", redis.port),
    ] {
        let error = RedisLink::start(&url, "a", quick_link()).expect_err("wrong password");
        let message = error.to_string();
        eprintln!("{message}");
        assert!(matches!(error, LinkError::Login { .. }), "{error:?}");
        assert!(!message.contains("wrong-one"), "{message}");
        assert!(!format!("{error:?}").contains("wrong-one"), "{error:?}");
        assert!(!message.contains('\n'));
    }
    // No password at all: Redis says so on the first command.
    let error = RedisLink::start(&redis.url(), "a", quick_link()).expect_err("no password");
    assert!(matches!(error, LinkError::Login { .. }), "{error:?}");

    let url = format!("redis://:right-one@127.0.0.1:{}", redis.port);
    let (a, a_in) = RedisLink::start(&url, "a", quick_link()).expect("the right password");
    join(&a, &a_in, "lobby");
    publish(&a, "lobby", "heard");
    let seen = collect(&a_in, |seen| line_count(seen) == 1);
    assert_eq!(lines(&seen), vec![(1, "heard".to_owned())]);
}

/// `rediss://`: Redis' certificate must chain to the CA file given, and
/// the link works over TLS as over TCP.
#[test]
fn rediss_checks_the_certificate() {
    let pki = Pki::new();
    let tls_port = free_port();
    let path = |p: &std::path::Path| p.display().to_string();
    let redis = Redis::start(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &path(&pki.cert),
        "--tls-key-file",
        &path(&pki.key),
        "--tls-ca-cert-file",
        &path(&pki.ca),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");

    // The system's roots do not know the test CA.
    let error = RedisLink::start(&url, "a", quick_link()).expect_err("unknown CA");
    let message = error.to_string();
    eprintln!("{message}");
    assert!(matches!(error, LinkError::Tls { .. }), "{error:?}");
    assert!(message.contains("certificate"), "{message}");
    assert!(!message.contains('\n'), "{message}");

    let settings = LinkSettings {
        ca_file: Some(pki.ca.clone()),
        ..quick_link()
    };
    let (a, a_in) = RedisLink::start(&url, "a", settings.clone()).unwrap_or_else(|e| panic!("{e}"));
    let (b, b_in) = start(&redis, "b", quick_link());
    join(&a, &a_in, "lobby");
    join(&b, &b_in, "lobby");
    publish(&a, "lobby", "over tls");
    publish(&b, "lobby", "over tcp");
    // The two publishers race each other: either may be first, but both
    // nodes see the one order Redis gave.
    let seen_a = lines(&collect(&a_in, |s| line_count(s) == 2));
    let seen_b = lines(&collect(&b_in, |s| line_count(s) == 2));
    assert_eq!(seen_a, seen_b);
    let mut texts: Vec<&str> = seen_a.iter().map(|(_, text)| text.as_str()).collect();
    texts.sort_unstable();
    assert_eq!(texts, ["over tcp", "over tls"]);
    assert_eq!(
        seen_a.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        [1, 2]
    );

    let error = RedisLink::start(
        &url,
        "a",
        LinkSettings {
            ca_file: Some(pki.ca.with_extension("missing")),
            ..quick_link()
        },
    )
    .expect_err("no CA file");
    assert!(matches!(error, LinkError::CaFile { .. }), "{error:?}");
}

/// A measurement, not a check: how many lines a second one node gets
/// through one Redis to two nodes. Run it with
/// `cargo test --release --test cluster throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; run by hand"]
fn throughput() {
    const LINES: usize = 20_000;
    let redis = Redis::start(&[]);
    let (a, a_in) = start(&redis, "a", quick_link());
    let (b, b_in) = start(&redis, "b", quick_link());
    join(&a, &a_in, "lobby");
    join(&b, &b_in, "lobby");
    let line = format!("chat alice {}", "x".repeat(90));
    let started = Instant::now();
    let reader = thread::spawn(move || collect(&b_in, |seen| seen.len() == LINES).len());
    for _ in 0..LINES {
        publish(&a, "lobby", &line);
    }
    let seen_a = collect(&a_in, |seen| seen.len() == LINES).len();
    let seen_b = reader.join().expect("reader");
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!((seen_a, seen_b), (LINES, LINES));
    eprintln!(
        "{LINES} lines of {} bytes, one publisher, two nodes: {elapsed:.2} s, {:.0} lines/s",
        line.len(),
        LINES as f64 / elapsed
    );
}

mod batches;
mod bounds;

//! Several chat servers, one chat: servers in this process (and, where a
//! test must kill one, as processes of their own), linked through a
//! `redis-server` of the test's own (Debian's package), started on a free
//! loopback port and stopped by its process id.

// Linked servers only: built with the `redis` feature (on by default).
#![cfg(feature = "redis")]

// What comes from Redis is checked, and what waits for it or for the
// answers is bounded: `bounds.rs`. Moderation across servers (where a
// test needs operators by certificate, as processes of their own):
// `moderation.rs`.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use secure_chat::chat::{ClientId, Keep, RoomId, LINK_DOWN_MSG, LINK_DOWN_NICK};
use secure_chat::elsewhere::{
    Ask, Elsewhere, Query, Reach, RoomLine, Told, Unasked, MOST_NAMES_ASKED,
};
use secure_chat::linked::redis_link::{name_key, Delivery, LinkSettings, RedisLink};
use secure_chat::linked::{
    Linked, ANSWERS_BYTES, HELD_BACK_BYTES, LINK_DOWN, LINK_UP, LINK_UP_HISTORY_LOST,
};
use secure_chat_test_support::{
    cert_args, kill, quick_link, run, test_limits, wait_until, Incoming, Pki, Redis, ServerProcess,
    TestClient, TestServer, SERVER,
};

fn node(pki: &Pki, redis: &Redis, name: &str) -> TestServer {
    TestServer::start_linked(pki, test_limits(), &redis.url(), name, quick_link())
}

/// Connects, takes `nick`, and waits until the room hears it.
fn person(server: &TestServer, pki: &Pki, nick: &str) -> TestClient {
    person_at(server.addr, pki, nick)
}

fn person_at(addr: std::net::SocketAddr, pki: &Pki, nick: &str) -> TestClient {
    let mut client = TestClient::connect(addr, &pki.ca);
    client.send(&format!("/nick {nick}"));
    client.recv_until(|line| line == format!("notice you are now {nick}"));
    client.nick = nick.to_owned();
    client
}

/// A Redis of the test's own and two servers linked through it, `a` and
/// `b` (server numbers 1 and 2: they start in that order).
struct Two {
    redis: Redis,
    pki: Pki,
    a: TestServer,
    b: TestServer,
}

impl Two {
    fn start(redis_args: &[&str]) -> Two {
        let redis = Redis::start(redis_args);
        let pki = Pki::new();
        let a = node(&pki, &redis, "a");
        let b = node(&pki, &redis, "b");
        Two { redis, pki, a, b }
    }

    fn stop(self) {
        self.a.stop();
        self.b.stop();
    }
}

/// `client` asks for `nick`, which someone on another server has.
fn assert_taken_elsewhere(client: &mut TestClient, nick: &str) {
    client.send(&format!("/nick {nick}"));
    assert_eq!(
        next_error(client),
        format!("error nick {nick} is taken on another server; choose another")
    );
}

/// The next error the client is sent.
fn next_error(client: &TestClient) -> String {
    client.recv_until(|line| line.starts_with("error "))
}

/// Waits until nobody holds `nick` in Redis.
fn wait_name_free(redis: &Redis, nick: &str) {
    let mut raw = redis.connection(&redis.url());
    let key = name_key(nick);
    let free = wait_until(|| {
        redis::cmd("EXISTS")
            .arg(&key)
            .query::<i64>(&mut raw)
            .expect("EXISTS")
            == 0
    });
    assert!(free, "{nick} still held");
}

#[test]
fn a_room_line_reaches_every_server() {
    let two = Two::start(&[]);
    let (redis, pki) = (&two.redis, &two.pki);
    let (a, b) = (&two.a, &two.b);
    let mut alice = person(a, pki, "alice");
    // Server a hears the lobby from now on: bob's arrival is news to it,
    // not its past.
    redis.wait_subscribed("#lobby", 1);
    let bob = person(b, pki, "bob");
    redis.wait_subscribed("#lobby", 2);
    alice.recv_until(|line| line == "notice guest2-1 joined #lobby");
    alice.send("hello from a");
    assert_eq!(alice.recv_non_notice(), "chat alice hello from a");
    assert_eq!(bob.recv_non_notice(), "chat alice hello from a");
    // Everyone else hears who came; the newcomer does not hear of
    // themself (the notice went through Redis before this line did).
    let mut bob = bob;
    bob.send("hi");
    let mut heard = Vec::new();
    loop {
        let line = bob.recv();
        if line == "chat bob hi" {
            break;
        }
        heard.push(line);
    }
    assert!(
        !heard.iter().any(|line| line.contains(" joined #lobby")),
        "{heard:?}"
    );
    alice.recv_until(|line| line == "chat bob hi");
    // A server that stops says goodbye for its users to the others.
    let Two {
        redis: _redis,
        a,
        b,
        ..
    } = two;
    b.stop();
    assert_eq!(bob.expect_end(), Incoming::Closed);
    alice.recv_until(|line| line == "notice bob quit: their server shut down");
    drop((alice, bob));
    a.stop();
}

/// A room's topic and last lines live in Redis: joining it on another
/// server shows them.
#[test]
fn history_and_topic_are_shared() {
    let two = Two::start(&[]);
    let pki = &two.pki;
    let (a, b) = (&two.a, &two.b);
    let mut alice = person(a, pki, "alice");
    alice.send("/join #tea");
    alice.recv_until(|line| line.starts_with("notice you are in #tea"));
    alice.send("/topic oolong");
    alice.recv_until(|line| line == "notice alice set the topic of #tea: oolong");
    alice.send("first");
    alice.send("/me pours");
    assert_eq!(alice.recv_non_notice(), "chat alice first");
    assert_eq!(alice.recv_non_notice(), "action alice pours");
    let mut bob = person(b, pki, "bob");
    bob.send("/join #tea");
    bob.recv_until(|line| line.starts_with("notice you are in #tea"));
    assert_eq!(bob.recv(), "notice topic of #tea: oolong");
    assert_eq!(bob.recv(), "history chat alice first");
    assert_eq!(bob.recv(), "history action alice pours");
    drop((alice, bob));
    two.stop();
}

/// Three servers, a sender on each, all sending at once: every member
/// gets every line once, and all in the one same order.
#[test]
fn three_servers_concurrent_senders_one_order() {
    const EACH: usize = 60;
    let redis = Redis::start(&[]);
    let pki = Pki::new();
    let servers: Vec<TestServer> = ["a", "b", "c"]
        .iter()
        .map(|name| node(&pki, &redis, name))
        .collect();
    let mut people: Vec<TestClient> = servers
        .iter()
        .zip(["ann", "ben", "cat"])
        .map(|(server, nick)| person(server, &pki, nick))
        .collect();
    redis.wait_subscribed("#lobby", 3);
    for i in 0..EACH {
        for who in people.iter_mut() {
            let text = format!("{} {i}", who.nick);
            who.send(&text);
        }
    }
    let seen: Vec<Vec<String>> = people
        .iter()
        .map(|who| (0..3 * EACH).map(|_| who.recv_non_notice()).collect())
        .collect();
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);
    for who in &people {
        let own: Vec<String> = seen[0]
            .iter()
            .filter_map(|line| line.strip_prefix(&format!("chat {} ", who.nick)))
            .map(str::to_owned)
            .collect();
        let sent: Vec<String> = (0..EACH).map(|i| format!("{} {i}", who.nick)).collect();
        assert_eq!(own, sent, "{}'s lines, once each, in order", who.nick);
    }
    // Nothing twice: the next line anyone gets is a new one.
    people[0].send("the end");
    for who in &people {
        assert_eq!(who.recv_non_notice(), "chat ann the end");
    }
    drop(people);
    for server in servers {
        server.stop();
    }
}

#[test]
fn a_nick_is_one_persons_on_every_server() {
    let two = Two::start(&[]);
    let (redis, pki) = (&two.redis, &two.pki);
    let (a, b) = (&two.a, &two.b);
    let mut alice = person(a, pki, "alice");
    let mut other = TestClient::connect(b.addr, &pki.ca);
    // Guests' names carry their server's number: none is given twice.
    assert!(other.nick.starts_with("guest2-"), "{}", other.nick);
    for attempt in ["alice", "ALICE"] {
        assert_taken_elsewhere(&mut other, attempt);
    }
    alice.send("/quit");
    alice.expect_end();
    wait_name_free(redis, "alice");
    other.send("/nick alice");
    other.recv_until(|line| line == "notice you are now alice");
    // The name's old holder, back, finds it taken.
    let mut again = TestClient::connect(a.addr, &pki.ca);
    assert_taken_elsewhere(&mut again, "alice");
    drop((again, other));
    two.stop();
}

/// Back to a nick one has just left: the release of the old name must
/// not overtake the new claim of it (it would delete it from Redis, and
/// another server could then hand it out twice).
#[test]
fn a_nick_taken_back_at_once_stays_claimed() {
    let two = Two::start(&[]);
    let (redis, pki) = (&two.redis, &two.pki);
    let mut dave = person(&two.a, pki, "dave");
    for nick in ["erin", "dave", "erin", "dave"] {
        dave.send(&format!("/nick {nick}"));
        dave.recv_until(|line| line == format!("notice you are now {nick}"));
    }
    // A round trip through the same thread: whatever it had to do before
    // is done.
    dave.send("/msg nobody x");
    assert_eq!(next_error(&dave), "error no user named nobody is connected");
    let mut raw = redis.connection(&redis.url());
    let held: i64 = redis::cmd("EXISTS")
        .arg(name_key("dave"))
        .query(&mut raw)
        .expect("EXISTS");
    assert_eq!(held, 1, "dave's claim was deleted");
    let mut other = TestClient::connect(two.b.addr, &pki.ca);
    assert_taken_elsewhere(&mut other, "dave");
    drop((dave, other));
    two.stop();
}

#[test]
fn private_lines_cross_servers() {
    let two = Two::start(&[]);
    let pki = &two.pki;
    let (a, b) = (&two.a, &two.b);
    let mut alice = person(a, pki, "alice");
    let bob = person(b, pki, "bob");
    alice.send("/msg Bob psst, over here");
    let line = "private alice Bob psst, over here";
    assert_eq!(bob.recv_non_notice(), line);
    // The sender sees it once it arrived, in every session.
    assert_eq!(alice.recv_non_notice(), line);
    alice.send("/msg nobody hello?");
    assert_eq!(
        next_error(&alice),
        "error no user named nobody is connected"
    );
    drop((alice, bob));
    two.stop();
}

/// `/who`, `/rooms` and `/whois` ask every server for its own users.
#[test]
fn who_rooms_and_whois_see_every_server() {
    let two = Two::start(&[]);
    let pki = &two.pki;
    let (a, b) = (&two.a, &two.b);
    let mut alice = person(a, pki, "alice");
    let _bob = person(b, pki, "Bob");
    let mut carol = person(b, pki, "carol");
    carol.send("/join #Tea");
    carol.recv_until(|line| line.starts_with("notice you are in #Tea"));
    // Others' news may come in between: each answer is looked for.
    let answer = |client: &TestClient, start: &str| {
        client.recv_until(|line| line.starts_with(start) || line.starts_with("error "))
    };
    alice.send("/who");
    assert_eq!(
        answer(&alice, "notice in "),
        "notice in #lobby (2): alice, Bob"
    );
    alice.send("/rooms");
    assert_eq!(
        answer(&alice, "notice rooms"),
        "notice rooms: #lobby (2), #Tea (1)"
    );
    alice.send("/whois CAROL");
    assert_eq!(answer(&alice, "notice carol"), "notice carol is in #Tea");
    alice.send("/whois nobody");
    assert_eq!(
        answer(&alice, "notice nobody"),
        "error no user named nobody is connected"
    );
    drop((alice, _bob, carol));
    two.stop();
}

/// The parts of answers the servers send this run, as `(count, names)`:
/// the next `servers` replies published on any server's channel.
fn who_parts(watcher: &mut redis::PubSub<'_>, servers: usize) -> Vec<(usize, usize)> {
    let mut parts: Vec<(usize, usize)> = (0..servers)
        .map(|_| {
            let message = watcher.get_message().expect("a server's part");
            let text: String = message.get_payload().expect("text");
            let (_ticket, part) = text
                .strip_prefix("r ")
                .and_then(|rest| rest.split_once(' '))
                .unwrap_or_else(|| panic!("not an answer: {text:?}"));
            let mut words = part.split(' ');
            let count = words.next().and_then(|count| count.parse().ok());
            let count = count.unwrap_or_else(|| panic!("no count first: {part:?}"));
            (count, words.count())
        })
        .collect();
    parts.sort_unstable();
    parts
}

/// `/who` in a room of 120 spread over two servers: each sends how many
/// it has and only as many names as the page asked for needs; the asker
/// adds the counts and puts the names in one order.
#[test]
fn who_asks_each_server_only_for_its_share_of_the_page() {
    const PEOPLE: usize = 120;
    let two = Two::start(&[]);
    let pki = &two.pki;
    // Upper and lower case alternate, and the servers' names interleave:
    // one order is made of both. Server `a` has every tenth, `b` the rest.
    let nick = |n: usize| format!("{}{n:03}", if n.is_multiple_of(2) { "M" } else { "m" });
    let mut people: Vec<TestClient> = (0..PEOPLE)
        .map(|n| {
            let server = if n.is_multiple_of(10) { &two.a } else { &two.b };
            person(server, pki, &nick(n))
        })
        .collect();
    let mut raw = two.redis.connection(&two.redis.url());
    let mut watcher = raw.as_pubsub();
    watcher.psubscribe("node:*").expect("PSUBSCRIBE");
    watcher
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let asker = &mut people[0];
    let mut ask = |text: &str| {
        asker.send(text);
        asker.recv_until(|line| line.starts_with("notice in ") || line.starts_with("error "))
    };
    let listed = |range: std::ops::Range<usize>| range.map(nick).collect::<Vec<_>>().join(", ");

    assert_eq!(
        ask("/who"),
        format!(
            "notice in #lobby (120), 1 to 100: {}; /who 2 for more",
            listed(0..100)
        )
    );
    assert_eq!(who_parts(&mut watcher, 2), [(12, 12), (108, 100)]);
    assert_eq!(
        ask("/who 2"),
        format!("notice in #lobby (120), 101 to 120: {}", listed(100..120))
    );
    assert_eq!(who_parts(&mut watcher, 2), [(12, 12), (108, 108)]);
    // Not a page: only the counts are asked, to say which pages there are.
    assert_eq!(ask("/who two"), "error /who has 2 pages: /who 1 to /who 2");
    assert_eq!(who_parts(&mut watcher, 2), [(12, 0), (108, 0)]);
    drop(people);
    two.stop();
}

/// Redis stops and comes back: chat on each server goes on meanwhile,
/// among its own users; users are told; no new nick is taken, no
/// private line sent elsewhere; afterwards lines cross again, once.
#[test]
fn redis_restarted_local_chat_goes_on_and_the_link_recovers() {
    let mut two = Two::start(&["--appendonly", "yes"]);
    let (redis, pki) = (&mut two.redis, &two.pki);
    let (a, b) = (&two.a, &two.b);
    let mut alice = person(a, pki, "alice");
    let mut bob = person(b, pki, "bob");
    redis.wait_subscribed("#lobby", 2);
    alice.send("before");
    assert_eq!(bob.recv_non_notice(), "chat alice before");
    assert_eq!(alice.recv_non_notice(), "chat alice before");

    redis.stop();
    let down = format!("notice {LINK_DOWN}");
    alice.recv_until(|line| line == down);
    bob.recv_until(|line| line == down);
    alice.send("only here");
    assert_eq!(alice.recv_non_notice(), "chat alice only here");
    alice.send("/nick alicia");
    assert_eq!(next_error(&alice), format!("error {LINK_DOWN_NICK}"));
    alice.send("/msg bob can you hear me");
    assert_eq!(next_error(&alice), format!("error {LINK_DOWN_MSG}"));

    redis.spawn(&[]);
    let up = format!("notice {LINK_UP}");
    alice.recv_until(|line| line == up);
    bob.recv_until(|line| line == up);
    redis.wait_subscribed("#lobby", 2);
    // Names were taken back: alice is still alice everywhere.
    let mut other = TestClient::connect(b.addr, &pki.ca);
    assert_taken_elsewhere(&mut other, "alice");
    bob.send("after");
    // What alice said during the outage never reached bob, and nothing
    // comes twice.
    assert_eq!(bob.recv_non_notice(), "chat bob after");
    assert_eq!(alice.recv_non_notice(), "chat bob after");
    alice.send("/msg bob back");
    assert_eq!(bob.recv_non_notice(), "private alice bob back");
    drop((alice, bob, other));
    two.stop();
}

/// Redis loses a room's last lines but not the room (as a failover to a
/// replica that had not received them, or a restart from a file a moment
/// old, does): its numbering goes back. Each node goes on from there; none
/// shows the room's history again as if it were new.
#[test]
fn a_numbering_that_goes_back_does_not_replay_the_room() {
    let two = Two::start(&[]);
    let (redis, pki) = (&two.redis, &two.pki);
    let (a, b) = (&two.a, &two.b);
    let mut alice = person(a, pki, "alice");
    let mut bob = person(b, pki, "bob");
    redis.wait_subscribed("#lobby", 2);
    for line in ["one", "two", "three"] {
        alice.send(line);
        assert_eq!(alice.recv_non_notice(), format!("chat alice {line}"));
        assert_eq!(bob.recv_non_notice(), format!("chat alice {line}"));
    }
    let mut raw = redis.connection(&redis.url());
    let current: u64 = redis::cmd("GET")
        .arg("room:{#lobby}:seq")
        .query(&mut raw)
        .expect("GET seq");
    assert!(current >= 3, "seq {current}");
    // The room as a replica two lines behind has it: its history rebuilt
    // without them (a stream remembers the last id it took even once that
    // entry is gone, a replica never took it), its numbering back by two.
    // Every node's listening connection goes with them, in one step: no
    // line can be numbered in between.
    let kept: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("room:{#lobby}:history")
        .arg("-")
        .arg(format!("{}-0", current - 2))
        .query(&mut raw)
        .expect("XRANGE");
    let mut lose = redis::pipe();
    lose.atomic()
        .cmd("DEL")
        .arg("room:{#lobby}:history")
        .ignore();
    for (id, fields) in &kept {
        lose.cmd("XADD").arg("room:{#lobby}:history").arg(id);
        for (field, value) in fields {
            lose.arg(field).arg(value);
        }
        lose.ignore();
    }
    lose.cmd("SET")
        .arg("room:{#lobby}:seq")
        .arg(current - 2)
        .ignore()
        .cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .ignore();
    lose.exec(&mut raw).expect("lose the last lines");
    // What missed lines there were come before the link says it is back:
    // none here, so nothing but notices.
    let up = format!("notice {LINK_UP}");
    for client in [&alice, &bob] {
        let mut before_up = Vec::new();
        loop {
            let line = client.recv();
            if line == up {
                break;
            }
            before_up.push(line);
        }
        assert!(
            before_up.iter().all(|line| line.starts_with("notice ")),
            "{}: {before_up:?}",
            client.nick
        );
    }
    redis.wait_subscribed("#lobby", 2);
    bob.send("after");
    // The next line each sees is the new one.
    assert_eq!(alice.recv_non_notice(), "chat bob after");
    assert_eq!(bob.recv_non_notice(), "chat bob after");
    let seq: u64 = redis::cmd("GET")
        .arg("room:{#lobby}:seq")
        .query(&mut raw)
        .expect("GET seq");
    assert_eq!(seq, current - 1, "the new line took the first lost number");
    drop((alice, bob));
    two.stop();
}

/// Redis restarts without its data: names held are taken back (a claim
/// from elsewhere finds them held), and one let go during the outage is
/// free afterwards.
#[test]
fn redis_restarted_without_data_names_are_taken_back_and_let_go() {
    let mut two = Two::start(&[]);
    let (redis, pki) = (&mut two.redis, &two.pki);
    let (a, b) = (&two.a, &two.b);
    let alice = person(a, pki, "alice");
    let mut carol = person(a, pki, "carol");
    // Server b's users are told too: b is back when bob hears it.
    let bob = person(b, pki, "bob");
    redis.stop();
    let down = format!("notice {LINK_DOWN}");
    for who in [&alice, &carol, &bob] {
        who.recv_until(|line| line == down);
    }
    carol.send("/quit");
    carol.expect_end();

    redis.spawn(&[]);
    let up = format!("notice {LINK_UP_HISTORY_LOST}");
    alice.recv_until(|line| line == up);
    bob.recv_until(|line| line == up);
    // Taken back by server a, within moments of the link's return.
    let mut raw = redis.connection(&redis.url());
    let held = wait_until(|| {
        redis::cmd("EXISTS")
            .arg(name_key("alice"))
            .query::<i64>(&mut raw)
            .expect("EXISTS")
            == 1
    });
    assert!(held, "alice was not taken back");
    let mut other = TestClient::connect(b.addr, &pki.ca);
    assert_taken_elsewhere(&mut other, "alice");
    other.send("/nick carol");
    other.recv_until(|line| line == "notice you are now carol");
    drop((alice, bob, other));
    two.stop();
}

/// A server killed outright cannot let its names go: they lapse by
/// themselves, within `--name-expiry`.
#[test]
fn a_killed_servers_nicks_come_free_within_the_expiry() {
    let redis = Redis::start(&[]);
    let pki = Pki::new();
    let url = redis.url();
    let mut args = cert_args(&pki.cert, &pki.key);
    args.extend(
        [
            "--redis",
            &url,
            "--node-name",
            "doomed",
            "--name-expiry",
            "5",
        ]
        .map(std::ffi::OsStr::new),
    );
    let mut doomed = ServerProcess::start(&args);
    let carol = person_at(doomed.addr, &pki, "carol");
    let b = node(&pki, &redis, "b");
    let mut dave = TestClient::connect(b.addr, &pki.ca);

    assert!(kill(doomed.pid, "-KILL"));
    doomed.wait_for_exit();
    let killed = Instant::now();
    assert_taken_elsewhere(&mut dave, "carol");
    // Renewed a moment ago at most: it lapses within the expiry.
    let mut raw = redis.connection(&url);
    let left: i64 = redis::cmd("PTTL")
        .arg(name_key("carol"))
        .query(&mut raw)
        .expect("PTTL");
    assert!((1..=5000).contains(&left), "{left} ms left");
    wait_name_free(&redis, "carol");
    eprintln!("carol free {:?} after the kill", killed.elapsed());
    dave.send("/nick carol");
    dave.recv_until(|line| line == "notice you are now carol");
    drop((carol, dave));
    b.stop();
}

/// `--redis` with a wrong password, or no Redis at all: one line, exit 1,
/// and the password never shown.
#[test]
fn a_server_that_cannot_log_in_to_redis_says_so_and_exits() {
    let redis = Redis::start(&["--requirepass", "right-one"]);
    let pki = Pki::new();
    let wrong = format!("redis://:wrong-one@127.0.0.1:{}", redis.port);
    let free = secure_chat_test_support::free_port();
    let nowhere = format!("redis://:wrong-one@127.0.0.1:{free}");
    for (url, says) in [
        (&wrong, "refused the login"),
        (&nowhere, "cannot reach Redis"),
    ] {
        let mut command = Command::new(&SERVER);
        command
            .args(["--addr", "127.0.0.1:0", "--redis", url])
            .args(cert_args(&pki.cert, &pki.key))
            .env_remove("RUST_LOG");
        let output = run(&mut command, "");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|line| line.starts_with("chat-server: "))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(says), "{stderr}");
        assert!(!stderr.contains("wrong-one"), "{stderr}");
    }
}

mod bounds;
mod deliveries;
mod moderation;
mod moderation_versions;

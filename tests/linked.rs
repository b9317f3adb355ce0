//! Several chat servers, one chat: servers in this process (and, where a
//! test must kill one, as processes of their own), linked through a
//! `redis-server` of the test's own (Debian's package), started on a free
//! loopback port and stopped by its process id.

// Linked servers only: built with the `redis` feature (on by default).
#![cfg(feature = "redis")]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use secure_chat::chat::{ClientId, Keep, RoomId, LINK_DOWN_MSG, LINK_DOWN_NICK};
use secure_chat::elsewhere::{
    Ask, Elsewhere, Query, Reach, RoomLine, Told, Unasked, MOST_NAMES_ASKED,
};
use secure_chat::linked::redis_link::{Delivery, LinkSettings, RedisLink};
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
    let key = format!("name:{{{nick}}}");
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
        .arg("name:{dave}")
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
            .arg("name:{alice}")
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
        .arg("name:{carol}")
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

/// Numbers, keeps and publishes `text` in `room` as the servers' script
/// does, past every check a server makes: what a hostile Redis, or anyone
/// on the path of plain `redis://`, could send.
fn forge(redis: &Redis, room: &str, text: &str) {
    let mut raw = redis.connection(&redis.url());
    let seq: u64 = redis::cmd("INCR")
        .arg(format!("room:{{{room}}}:seq"))
        .query(&mut raw)
        .expect("INCR");
    redis::cmd("XADD")
        .arg(format!("room:{{{room}}}:history"))
        .arg(format!("{seq}-0"))
        .arg("node")
        .arg("ghost")
        .arg("line")
        .arg(text)
        .exec(&mut raw)
        .expect("XADD");
    redis::cmd("PUBLISH")
        .arg(format!("room:{{{room}}}"))
        .arg(format!("{seq} ghost {text}"))
        .exec(&mut raw)
        .expect("PUBLISH");
}

/// What comes from Redis is checked as what comes from a client: no line
/// made two, no terminal commands, no kind of line a room never carries.
#[test]
fn lines_from_redis_are_checked_as_strictly_as_a_clients() {
    let redis = Redis::start(&[]);
    let pki = Pki::new();
    let a = node(&pki, &redis, "a");
    let mut alice = person(&a, &pki, "alice");
    redis.wait_subscribed("#lobby", 1);
    for forged in [
        "h - chat mallory hi\nnotice forged one\n",
        "h - chat mallory \u{1b}]0;forged two\u{7}\n",
        "n - error forged three\n",
        "t - forged\nnotice forged four\nchat x y\n",
        "h - chat mallory \u{202E}forged six\n",
    ] {
        forge(&redis, "#lobby", forged);
    }
    let mut raw = redis.connection(&redis.url());
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("node:a/*")
        .query(&mut raw)
        .expect("PUBSUB CHANNELS");
    assert_eq!(channels.len(), 1, "{channels:?}");
    redis::cmd("PUBLISH")
        .arg(&channels[0])
        .arg("p alice private mallory alice hi\nnotice forged five\n")
        .exec(&mut raw)
        .expect("PUBLISH");
    // After all of them on the same subscription: when it is here, they
    // were all handled.
    alice.send("after");
    let mut heard = Vec::new();
    loop {
        let line = alice.recv();
        if line == "chat alice after" {
            break;
        }
        heard.push(line);
    }
    assert!(
        !heard
            .iter()
            .any(|line| line.contains("forged") || line.contains("mallory")),
        "{heard:?}"
    );
    drop(alice);
    a.stop();
}

/// How many 4 KiB room lines `linked` takes to hold back, in `room`,
/// before it gives one back to be shown here only; `None` if it took
/// `most` and more.
fn held_back_until_given_back(linked: &mut Linked, room: RoomId, most: usize) -> Option<usize> {
    let text: std::sync::Arc<str> = format!("chat alice {}\n", "x".repeat(4000)).into();
    (0..=most).find(|_| {
        let line = RoomLine {
            room,
            line: std::sync::Arc::clone(&text),
            except: None,
            keep: Keep::History,
        };
        let given_back = linked.say(line, &|| None).is_some();
        // As the hub does after each event.
        linked.event_done();
        given_back
    })
}

/// Counts the log's "Redis is far behind" warnings: the only records this
/// binary looks at, and only one test makes them.
struct FarBehind(AtomicUsize);

impl log::Log for FarBehind {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata())
            && record.args().to_string().starts_with("Redis is far behind")
        {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn flush(&self) {}
}

static FAR_BEHIND: FarBehind = FarBehind(AtomicUsize::new(0));

/// How many times the log has said Redis is far behind, so far.
fn far_behind_warnings() -> usize {
    // Set once for the whole binary: later calls find it set.
    let _ = log::set_logger(&FAR_BEHIND);
    log::set_max_level(log::LevelFilter::Warn);
    FAR_BEHIND.0.load(Ordering::SeqCst)
}

/// What waits here for Redis is bounded in bytes, all rooms together:
/// lines the link's outbox has no room for (65,536 of them could hold
/// 256 MB), and lines said in a room whose past has not come yet.
#[test]
fn lines_waiting_for_redis_are_bounded_in_bytes() {
    const TIMEOUT: Duration = Duration::from_secs(20);
    let redis = Redis::start(&[]);
    // Redis will stop answering for a while: the links must not notice.
    let settings = LinkSettings {
        outbox: 1,
        ping_every: Duration::from_secs(600),
        reply_timeout: Duration::from_secs(60),
        ..quick_link()
    };
    let start = |node| {
        let (link, deliveries) =
            RedisLink::start(&redis.url(), node, settings.clone()).expect("link");
        (Linked::new(link, deliveries.clone()), deliveries)
    };
    let (mut a, a_in) = start("a");
    let (mut b, _b_in) = start("b");
    let warned = far_behind_warnings();
    a.entered(RoomId(1), &|| Some("#big".to_owned()));
    match a_in.recv_timeout(TIMEOUT) {
        Ok(recent @ Delivery::Recent { .. }) => drop(a.delivered(recent)),
        other => panic!("{other:?}"),
    }
    let mut raw = redis.connection(&redis.url());
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(4000)
        .arg("ALL")
        .exec(&mut raw)
        .expect("CLIENT PAUSE");
    let paused = Instant::now();
    // Two in the link (the publisher's and its outbox's), the rest here.
    let most = HELD_BACK_BYTES / 4000 + 2;
    let taken = held_back_until_given_back(&mut a, RoomId(1), 70_000);
    assert!(
        taken.is_some_and(|n| n <= most),
        "{taken:?}, at most {most}"
    );
    // A room whose past cannot come while Redis does not answer.
    b.entered(RoomId(2), &|| Some("#past".to_owned()));
    let taken = held_back_until_given_back(&mut b, RoomId(2), 70_000);
    assert!(taken.is_some_and(|n| n < most), "{taken:?}, at most {most}");
    // Each says so once, however many lines it gives back.
    for (server, room) in [(&mut a, RoomId(1)), (&mut b, RoomId(2))] {
        let more = held_back_until_given_back(server, room, 0);
        assert_eq!(more, Some(0), "given back at once");
    }
    assert_eq!(far_behind_warnings() - warned, 2, "one warning per server");
    assert!(
        paused.elapsed() < Duration::from_secs(4),
        "Redis answered again before the end: the test proves nothing"
    );
    drop((a, b));
}

/// `/who` of client `id` in `#big`, as the chat asks it.
fn who_big(id: u64) -> Ask {
    Ask::Query {
        id: ClientId(id),
        query: Query::Who {
            room: "#big".into(),
            names: MOST_NAMES_ASKED,
        },
        page: None,
    }
}

/// One question at a time per client, and what its answers may take is
/// bounded in bytes: past it, the answer says not every part is in.
#[test]
fn one_question_per_client_and_answers_bounded_in_bytes() {
    const TIMEOUT: Duration = Duration::from_secs(20);
    let redis = Redis::start(&[]);
    let (link, deliveries) = RedisLink::start(&redis.url(), "a", quick_link()).expect("link");
    let mut a = Linked::new(link, deliveries.clone());
    assert!(a.ask(who_big(1)).is_ok());
    match a.ask(who_big(1)) {
        Err((_, Unasked::Busy)) => {}
        other => panic!("a second question while the first waits: {other:?}"),
    }
    assert!(a.ask(who_big(2)).is_ok(), "another client's question");
    // The first question's ticket, as Redis numbered its listeners.
    let ticket = loop {
        match deliveries.recv_timeout(TIMEOUT) {
            Ok(Delivery::Asked { ticket, .. }) => break ticket,
            Ok(_) => continue,
            Err(error) => panic!("never asked: {error}"),
        }
    };
    // Two servers heard it, each with 10,000 names of 20 bytes.
    let names: Vec<String> = (0..MOST_NAMES_ASKED)
        .map(|n| format!("somebody-{n:011}"))
        .collect();
    let part = format!("{} {}", 2 * MOST_NAMES_ASKED, names.join(" "));
    assert_eq!(
        a.delivered(Delivery::Asked {
            ticket,
            nodes: Some(2)
        }),
        Told::Nothing
    );
    let answer = part.clone();
    let first = a.delivered(Delivery::Answer { ticket, answer });
    assert_eq!(first, Told::Nothing, "one part of two");
    let answer = part;
    let Told::Answered {
        id, parts, reach, ..
    } = a.delivered(Delivery::Answer { ticket, answer })
    else {
        panic!("both parts in, and no answer");
    };
    assert_eq!(id, ClientId(1));
    let bytes: usize = parts.iter().map(String::len).sum();
    assert!(bytes <= ANSWERS_BYTES, "{bytes} bytes of answers");
    let kept = parts.iter().filter(|part| !part.is_empty()).count();
    assert_eq!(kept, 1, "the first part is in, the second past the bytes");
    // Every server answered: the answer says it was cut, not late.
    assert_eq!(reach, Reach::Cut);
    // Answered: the client may ask again.
    assert!(a.ask(who_big(1)).is_ok());
}

/// A server's part of an answer is given again for a moment, without
/// asking the chat: a burst of `/who` in a big room costs each server one
/// look at the room.
#[test]
fn a_servers_answer_is_kept_a_moment() {
    const TIMEOUT: Duration = Duration::from_secs(20);
    let redis = Redis::start(&[]);
    let (link, deliveries) = RedisLink::start(&redis.url(), "a", quick_link()).expect("link");
    let mut a = Linked::new(link, deliveries);
    let mut raw = redis.connection(&redis.url());
    let mut asker = raw.as_pubsub();
    asker.subscribe("node:x/1").expect("SUBSCRIBE");
    asker.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let question = |ticket| Delivery::Question {
        run: "x/1".into(),
        ticket,
        question: "who 100 #big".into(),
    };
    match a.delivered(question(1)) {
        Told::Question { asker, query } => {
            let room = "#big".into();
            assert_eq!(query, Query::Who { room, names: 100 });
            a.answer(&asker, "2 alice bob");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        a.delivered(question(2)),
        Told::Nothing,
        "asked again at once: the chat is not asked"
    );
    for ticket in [1, 2] {
        let message = asker.get_message().expect("an answer");
        let text: String = message.get_payload().expect("text");
        assert_eq!(text, format!("r {ticket} 2 alice bob"));
    }
}

/// A room emptied and entered again in one event (the last member left as
/// another came) keeps the lines that waited for its past: they go to
/// Redis after the new join's past.
#[test]
fn lines_waiting_for_a_rooms_past_survive_leaving_and_entering_at_once() {
    const TIMEOUT: Duration = Duration::from_secs(20);
    let redis = Redis::start(&[]);
    let (link, deliveries) = RedisLink::start(&redis.url(), "a", quick_link()).expect("link");
    let mut a = Linked::new(link, deliveries.clone());
    let room = RoomId(1);
    a.entered(room, &|| Some("#again".to_owned()));
    let said = ["chat alice one\n", "chat alice two\n", "chat alice three\n"];
    for text in said {
        let line = RoomLine {
            room,
            line: text.into(),
            except: None,
            keep: Keep::History,
        };
        // Its past has not been read yet: the line waits here.
        assert!(a.say(line, &|| None).is_none());
    }
    a.emptied(room);
    a.entered(room, &|| Some("#again".to_owned()));
    a.event_done();
    let deadline = Instant::now() + TIMEOUT;
    let mut shown = Vec::new();
    while shown.len() < said.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let delivery = deliveries
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("timed out; shown so far: {shown:?}"));
        match a.delivered(delivery) {
            Told::Line(line) => shown.push(line.line.to_string()),
            Told::Recent { then, .. } => assert!(then.is_empty(), "given back: {then:?}"),
            _ => {}
        }
        a.event_done();
    }
    assert_eq!(shown, said);
    drop(a);
}

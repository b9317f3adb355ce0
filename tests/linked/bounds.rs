//! What comes from Redis is checked as strictly as a client's line, and
//! what waits here for Redis, or for the answers to a question, is bounded
//! in bytes and in number.

use super::*;
use secure_chat::chat::Save;
use secure_chat::elsewhere::Waiting;

/// Numbers, keeps and publishes `text` in `room` as the servers' script
/// does, past every check a server makes: what a hostile Redis, or anyone
/// on the path of plain `redis://`, could send.
fn forge(redis: &Redis, room: &str, text: &str) {
    let mut raw = redis.connection(&redis.url());
    // In one step, as the script does: a line the server numbers in
    // between would take the next id first, and the stream refuse this one.
    let forged = redis::Script::new(
        r"
local seq = redis.call('INCR', KEYS[1])
local framed = #ARGV[1] .. ':' .. ARGV[1]
redis.call('XADD', KEYS[2], seq .. '-0', 'node', 'ghost', 'lines', framed)
redis.call('PUBLISH', ARGV[2], seq .. ' ghost ' .. framed)
return seq
",
    );
    let _: u64 = forged
        .key(format!("room:{{{room}}}:seq"))
        .key(format!("room:{{{room}}}:history"))
        .arg(text)
        .arg(format!("room:{{{room}}}"))
        .invoke(&mut raw)
        .expect("the forged line is numbered, kept and published");
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
/// 256 MB), and lines said in a room whose past has not come yet. A
/// change of rules made past the bound is not lost: it waits apart.
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
        (Linked::new(link), deliveries)
    };
    let (mut a, a_in) = start("a");
    let (mut b, b_in) = start("b");
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
    // A change of rules made now is not lost: it waits apart, and goes
    // once the outbox drains (a), or the room's past comes (b).
    // Longer than one line, so that it finds no room where a line did not.
    let bans: Vec<String> = (0..40)
        .map(|n| format!("ban - op troll{n} {}", "x".repeat(200)))
        .collect();
    let ban = bans.join("\n");
    let ban = ban.as_str();
    for (server, room) in [(&mut a, "#big"), (&mut b, "#past")] {
        server.save(Save::Rules {
            room: room.to_owned(),
            rules: Some(ban.to_owned()),
        });
        server.event_done();
    }
    assert!(
        paused.elapsed() < Duration::from_secs(4),
        "Redis answered again before the end: the test proves nothing"
    );
    for (server, deliveries, room) in [(&mut a, &a_in, "#big"), (&mut b, &b_in, "#past")] {
        let deadline = Instant::now() + 3 * TIMEOUT;
        loop {
            let text: Option<String> = redis::cmd("HGET")
                .arg(format!("room:{{{room}}}:rules"))
                .arg("text")
                .query(&mut raw)
                .expect("HGET");
            if text.as_deref() == Some(ban) {
                break;
            }
            assert!(Instant::now() < deadline, "the ban in {room} was lost");
            if let Ok(delivery) = deliveries.recv_timeout(Duration::from_millis(100)) {
                drop(server.delivered(delivery));
            }
            server.event_done();
        }
    }
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
    let mut a = Linked::new(link);
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
    // Enough servers heard it to pass the bytes, each with as many names
    // of 20 bytes as may be asked.
    let names: Vec<String> = (0..MOST_NAMES_ASKED)
        .map(|n| format!("somebody-{n:011}"))
        .collect();
    let servers = ANSWERS_BYTES / (21 * MOST_NAMES_ASKED) + 2;
    let part = format!("{} {}", servers * MOST_NAMES_ASKED, names.join(" "));
    assert_eq!(
        a.delivered(Delivery::Asked {
            ticket,
            nodes: Some(servers)
        }),
        Told::Nothing
    );
    for n in 1..servers {
        let answer = part.clone();
        let told = a.delivered(Delivery::Answer { ticket, answer });
        assert_eq!(told, Told::Nothing, "part {n} of {servers}");
    }
    let answer = part;
    let Told::Answered {
        id, parts, reach, ..
    } = a.delivered(Delivery::Answer { ticket, answer })
    else {
        panic!("every part in, and no answer");
    };
    assert_eq!(id, ClientId(1));
    let bytes: usize = parts.iter().map(String::len).sum();
    assert!(bytes <= ANSWERS_BYTES, "{bytes} bytes of answers");
    let kept = parts.iter().filter(|part| !part.is_empty()).count();
    assert!(
        kept >= 1 && kept < servers,
        "{kept} of {servers} parts kept: the first in, the last past the bytes"
    );
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
    // Kept, unread, so that the link has somewhere to deliver.
    let (link, _deliveries) = RedisLink::start(&redis.url(), "a", quick_link()).expect("link");
    let mut a = Linked::new(link);
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
    let mut a = Linked::new(link);
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
    // A loaded machine can miss the link's 1 s reply time: the link goes
    // down and what waited is shown here at once (`Told::Unreachable`),
    // in no promised order beside what went through Redis.
    let mut outage = false;
    while shown.len() < said.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let delivery = deliveries
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("timed out; shown so far: {shown:?}"));
        match a.delivered(delivery) {
            Told::Lines(lines) => shown.extend(lines.iter().map(|line| line.line.to_string())),
            Told::Unreachable { lines, .. } => {
                outage = true;
                shown.extend(lines.iter().map(|line| line.line.to_string()));
            }
            // As the hub does with what the chat lets through.
            Told::Recent { waiting, .. } => {
                for waited in waiting {
                    let Waiting::Line(line) = waited else {
                        panic!("no rules were changed: {waited:?}");
                    };
                    let key = || Some("#again".to_owned());
                    assert!(a.say(line, &key).is_none(), "given back");
                }
            }
            _ => {}
        }
        a.event_done();
    }
    if outage {
        shown.sort();
        let mut said = said.to_vec();
        said.sort();
        assert_eq!(shown, said, "lost or doubled across the outage");
    } else {
        assert_eq!(shown, said);
    }
    drop(a);
}

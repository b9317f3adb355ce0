//! The publisher's calls: how a batch is cut into script calls, and, on
//! a `redis-server` of the test's own, that a call numbers a room's lines
//! once, in their order, however often it is retried.

use std::time::Duration;

use secure_chat_test_support::Redis;

use super::super::scripts::PUBLISH_SCRIPT;
use super::*;

/// A line of `room`, with its count.
fn line(count: u64, room: &str, text: &str) -> (u64, ToPublish) {
    let line = ToPublish {
        room: room.to_owned(),
        line: text.to_owned(),
        topic: None,
    };
    (count, line)
}

/// The counts of each call.
fn counts(calls: &[Vec<&(u64, ToPublish)>]) -> Vec<Vec<u64>> {
    calls
        .iter()
        .map(|call| call.iter().map(|(count, _)| *count).collect())
        .collect()
}

#[test]
fn a_batch_goes_in_one_call_per_room_cut_after_a_topic() {
    let mut batch = vec![
        line(1, "lobby", "a"),
        line(2, "den", "b"),
        line(3, "lobby", "c"),
        line(4, "den", "d"),
        line(5, "lobby", "e"),
        line(6, "den", "f"),
    ];
    assert_eq!(counts(&calls(&batch)), [vec![1, 3, 5], vec![2, 4, 6]]);
    batch[3].1.topic = Some("news".into());
    assert_eq!(counts(&calls(&batch)), [vec![1, 3, 5], vec![2, 4], vec![6]]);
    assert!(calls(&[]).is_empty());
}

/// A Redis of the test's own, and a connection to it with the script
/// loaded.
struct Bench {
    redis: Redis,
    connection: Connection,
    script: Script,
    settings: LinkSettings,
}

impl Bench {
    fn start() -> Bench {
        let redis = Redis::start(&[]);
        let mut connection = redis.connection(&redis.url());
        let script = Script::new(PUBLISH_SCRIPT);
        script.load(&mut connection).expect("script loads");
        Bench {
            redis,
            connection,
            script,
            settings: LinkSettings::default(),
        }
    }

    /// Runs the batch's pipeline as node `n`, run `n/1`, as a first send:
    /// each call's reply.
    fn publish(&mut self, batch: &[(u64, ToPublish)]) -> Vec<u64> {
        self.send("n/1", "n", batch, false)
    }

    /// The same, sent again after a lost reply: with the check.
    fn resend(&mut self, batch: &[(u64, ToPublish)]) -> Vec<u64> {
        self.send("n/1", "n", batch, true)
    }

    /// Runs the batch's pipeline as `sender` on `node`.
    fn send(
        &mut self,
        sender: &str,
        node: &str,
        batch: &[(u64, ToPublish)],
        resend: bool,
    ) -> Vec<u64> {
        self.plan(sender, node, batch, resend)
            .query(&mut self.connection)
            .expect("pipeline runs")
    }

    /// The batch's pipeline as `sender` on `node`.
    fn plan(
        &self,
        sender: &str,
        node: &str,
        batch: &[(u64, ToPublish)],
        resend: bool,
    ) -> redis::Pipeline {
        let sending = Sending {
            script: &self.script,
            settings: &self.settings,
            sender,
            node,
            publish: "PUBLISH",
            resend,
        };
        let calls = calls(batch);
        let calls: Vec<&Vec<&(u64, ToPublish)>> = calls.iter().collect();
        pipeline(&sending, &calls, &HashSet::new())
    }

    /// A connection to listen on, whose reads end within 10 s.
    fn listening(&self) -> Connection {
        let connection = self.redis.connection(&self.redis.url());
        connection
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        connection
    }

    /// `room`'s history, (seq, line) in order: each entry's lines
    /// numbered from its id on.
    fn history(&mut self, room: &str) -> Vec<(u64, String)> {
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(Keys::of(room).history)
            .arg("-")
            .arg("+")
            .query(&mut self.connection)
            .expect("XRANGE");
        let mut lines = Vec::new();
        for (id, fields) in &entries {
            let first = super::super::subscriber::first_of(id).expect("FIRST-0");
            let held = super::super::subscriber::entry_lines(fields).expect("lines");
            lines.extend((first..).zip(held.into_iter().map(str::to_owned)));
        }
        lines
    }

    /// A counter of `room`'s (`part` of its keys), 0 if there is none.
    fn counter(&mut self, room: &str, part: &str) -> i64 {
        let value: Option<i64> = redis::cmd("GET")
            .arg(format!("room:{{{room}}}:{part}"))
            .query(&mut self.connection)
            .expect("GET");
        value.unwrap_or(0)
    }

    /// Stops the Redis, which waits until its process has ended. (Its
    /// port is not checked: another test may have it already.)
    fn stop(mut self) {
        drop(self.connection);
        self.redis.stop();
    }
}

/// What a room's channel carries for `lines` said by node `n`, numbered
/// from `first`.
fn heard_from_n(first: u64, lines: &[String]) -> Vec<String> {
    (first..)
        .zip(lines)
        .map(|(seq, line)| format!("{seq} n {line}"))
        .collect()
}

/// What `listener` hears on each of `rooms`' channels up to a `end` each
/// of them gets after the calls, each batch opened into `seq node line`s,
/// in order, per room.
fn heard(
    listener: &mut redis::PubSub<'_>,
    publisher: &mut Connection,
    rooms: &[&str],
) -> Vec<Vec<String>> {
    for room in rooms {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel(room))
            .arg("end")
            .query(publisher)
            .expect("PUBLISH");
    }
    let mut heard = vec![Vec::new(); rooms.len()];
    let mut ended = 0;
    while ended < rooms.len() {
        let message = listener
            .get_message()
            .expect("a message within the timeout");
        let room = room_of(message.get_channel_name()).expect("a room's channel");
        let index = rooms
            .iter()
            .position(|r| *r == room)
            .expect("a room asked for");
        let payload: String = message.get_payload().expect("text");
        if payload == "end" {
            ended += 1;
            continue;
        }
        // One message per call: its lines, numbered from its first.
        let (first, node, lines) = parse_payload(payload.as_bytes()).expect("a batch");
        for (seq, line) in (first..).zip(lines) {
            heard[index].push(format!("{seq} {node} {line}"));
        }
    }
    heard
}

#[test]
fn a_retried_batch_numbers_each_line_once() {
    let mut bench = Bench::start();
    let mut listening = bench.listening();
    let mut listener = listening.as_pubsub();
    listener.subscribe(channel("lobby")).expect("SUBSCRIBE");
    listener.subscribe(channel("den")).expect("SUBSCRIBE");

    let batch: Vec<_> = (1..=8)
        .map(|count| {
            let room = if count % 3 == 0 { "den" } else { "lobby" };
            line(count, room, &format!("line {count}"))
        })
        .collect();
    // The connection broke after Redis ran the lobby's first lines, say
    // the batch before this one, and the reply was lost: the publisher
    // sends all again, then (another lost reply) once more.
    let done_before: Vec<_> = batch
        .iter()
        .filter(|(count, line)| *count <= 4 && line.room == "lobby")
        .map(|(count, line)| self::line(*count, &line.room, &line.line))
        .collect();
    assert_eq!(bench.publish(&done_before), [3]);
    assert_eq!(bench.resend(&batch), [6, 2]);
    assert_eq!(bench.resend(&batch), [0, 0]);

    let lobby = [1, 2, 4, 5, 7, 8].map(|count| format!("line {count}"));
    let den = [3, 6].map(|count| format!("line {count}"));
    let numbered =
        |lines: &[String]| -> Vec<(u64, String)> { (1..).zip(lines.iter().cloned()).collect() };
    assert_eq!(bench.history("lobby"), numbered(&lobby));
    assert_eq!(bench.history("den"), numbered(&den));
    let heard = heard(&mut listener, &mut bench.connection, &["lobby", "den"]);
    assert_eq!(heard, [heard_from_n(1, &lobby), heard_from_n(1, &den)]);
    drop(listener);
    drop(listening);
    bench.stop();
}

/// A first send that timed out may still sit unread in Redis when its
/// retry, on a new connection, runs: read later, it must find its lines
/// done, not number them again.
#[test]
fn a_first_send_run_after_its_retry_publishes_nothing() {
    let mut bench = Bench::start();
    let batch: Vec<_> = (1..=4)
        .map(|count| line(count, "lobby", &format!("line {count}")))
        .collect();
    assert_eq!(bench.resend(&batch), [4]);
    assert_eq!(bench.publish(&batch), [0]);
    let kept: Vec<_> = (1..)
        .zip(batch.iter().map(|(_, l)| l.line.clone()))
        .collect();
    assert_eq!(bench.history("lobby"), kept);
    bench.stop();
}

/// Redis keeps what a script did before an error: a call that fails half
/// way must not be published again when the publisher retries it.
#[test]
fn a_call_that_fails_half_way_is_not_published_again() {
    let mut bench = Bench::start();
    let mut listening = bench.listening();
    let mut listener = listening.as_pubsub();
    listener.subscribe(channel("lobby")).expect("SUBSCRIBE");

    // A first line starts the room's numbering (which clears the byte
    // count). Then the byte count is no number, so the script fails at
    // its `INCRBY`, after it has numbered, kept and published the lines.
    assert_eq!(bench.publish(&[line(1, "lobby", "line 1")]), [1]);
    let _: () = redis::cmd("SET")
        .arg(Keys::of("lobby").size)
        .arg("not a number")
        .query(&mut bench.connection)
        .expect("SET");
    let batch: Vec<_> = (2..=4)
        .map(|count| line(count, "lobby", &format!("line {count}")))
        .collect();
    let call = bench.plan("n/1", "n", &batch, false);
    let failed = call.query::<Vec<u64>>(&mut bench.connection);
    assert!(failed.is_err(), "the call fails half way");
    // The retry finds its lines marked as done.
    assert_eq!(bench.resend(&batch), [0]);

    let lines = ["line 1", "line 2", "line 3", "line 4"];
    let kept: Vec<_> = (1..).zip(lines.map(String::from)).collect();
    assert_eq!(bench.history("lobby"), kept);
    let heard = heard(&mut listener, &mut bench.connection, &["lobby"]);
    assert_eq!(heard, [heard_from_n(1, &lines.map(String::from))]);
    drop(listener);
    drop(listening);
    bench.stop();
}

#[test]
fn one_rooms_lines_in_one_call_keep_their_order_beside_another_rooms() {
    let mut bench = Bench::start();
    let mut listening = bench.listening();
    let mut listener = listening.as_pubsub();
    listener.subscribe(channel("lobby")).expect("SUBSCRIBE");
    listener.subscribe(channel("den")).expect("SUBSCRIBE");

    // Another node's line first, so this node's calls start at 2 in the
    // lobby: the numbers come from the room's counter, not the call.
    bench.send("m/1", "m", &[line(1, "lobby", "hi")], false);
    let mut batch: Vec<_> = (1..=40)
        .map(|count| {
            let room = if count % 2 == 0 { "den" } else { "lobby" };
            line(count, room, &format!("{room} {count}"))
        })
        .collect();
    batch[9].1.topic = Some("ten".into());
    let plan = bench.plan("n/1", "n", &batch, false);
    assert_eq!(
        plan.cmd_iter().count(),
        3,
        "one call per room, one more for the topic"
    );
    let replies: Vec<u64> = plan.query(&mut bench.connection).expect("pipeline runs");
    assert_eq!(replies, [21, 5, 20]);

    let topic: Option<String> = redis::cmd("GET")
        .arg(Keys::of("den").topic)
        .query(&mut bench.connection)
        .expect("GET");
    assert_eq!(topic.as_deref(), Some("ten"));
    let lobby: Vec<String> = (1..=40)
        .step_by(2)
        .map(|count| format!("lobby {count}"))
        .collect();
    let den: Vec<String> = (2..=40)
        .step_by(2)
        .map(|count| format!("den {count}"))
        .collect();
    let history = bench.history("lobby");
    assert_eq!(history[0], (1, "hi".to_owned()));
    assert_eq!(
        history[1..],
        (2..).zip(lobby.iter().cloned()).collect::<Vec<_>>()[..]
    );
    assert_eq!(
        bench.history("den"),
        (1..).zip(den.iter().cloned()).collect::<Vec<_>>()
    );
    let heard = heard(&mut listener, &mut bench.connection, &["lobby", "den"]);
    let mut lobby_heard = vec!["1 m hi".to_owned()];
    lobby_heard.extend(heard_from_n(2, &lobby));
    assert_eq!(heard, [lobby_heard, heard_from_n(1, &den)]);
    drop(listener);
    drop(listening);
    bench.stop();
}

/// `room`'s history as it stands, checked whole: its lines numbered
/// without a hole up to the room's seq, and the two counts kept beside it
/// (lines, bytes) true. The lines, oldest first.
fn checked_history(bench: &mut Bench, room: &str) -> Vec<(u64, String)> {
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(Keys::of(room).history)
        .arg("-")
        .arg("+")
        .query(&mut bench.connection)
        .expect("XRANGE");
    let bytes: usize = entries
        .iter()
        .flat_map(|(_, fields)| fields.iter())
        .filter(|(field, _)| *field == "lines" || *field == "line")
        .map(|(_, kept)| kept.len())
        .sum();
    let history = bench.history(room);
    let seq = bench.counter(room, "seq");
    let seqs: Vec<u64> = history.iter().map(|(seq, _)| *seq).collect();
    let from = seqs.first().copied().unwrap_or(1);
    assert_eq!(seqs, (from..=seq as u64).collect::<Vec<_>>(), "holes");
    assert_eq!(bench.counter(room, "lines"), history.len() as i64, "lines");
    assert_eq!(bench.counter(room, "size"), bytes as i64, "bytes");
    assert!(!entries.is_empty());
    history
}

/// The history keeps whole batches within both caps, oldest first, and
/// its counts stay true over many trims.
#[test]
fn batches_are_trimmed_whole_by_lines_and_by_bytes() {
    let mut bench = Bench::start();
    for (room, history, history_bytes) in [("by-lines", 50, 1 << 20), ("by-bytes", 10_000, 600)] {
        bench.settings.history = history;
        bench.settings.history_bytes = history_bytes;
        let mut count = 0;
        let mut trims = 0;
        let mut before = 0;
        for call in 0..200 {
            let batch: Vec<_> = (0..1 + call % 7)
                .map(|_| {
                    count += 1;
                    let text = format!("{count} {}", "x".repeat(count % 23));
                    line(count as u64, room, &text)
                })
                .collect();
            bench.publish(&batch);
            let held = checked_history(&mut bench, room);
            // The newest always, whatever the caps.
            let newest = format!("{count} ");
            assert!(held
                .last()
                .is_some_and(|(_, line)| line.starts_with(&newest)));
            let entries: usize = redis::cmd("XLEN")
                .arg(Keys::of(room).history)
                .query(&mut bench.connection)
                .expect("XLEN");
            let bytes = bench.counter(room, "size") as usize;
            assert!(
                entries == 1 || (held.len() <= history && bytes <= history_bytes),
                "{room}: {} lines, {bytes} bytes in {entries} entries",
                held.len()
            );
            if held.len() < before {
                trims += 1;
            }
            before = held.len();
        }
        assert!(trims >= 10, "{room}: {trims} trims");
    }
    bench.stop();
}

/// A history kept one line per entry, as servers kept it before
/// batches, and without a count of its lines: the next batch counts
/// them from its first entry, trims the oldest, and the old entries
/// left are still read.
#[test]
fn a_history_of_single_lines_is_counted_and_trimmed() {
    let mut bench = Bench::start();
    let room = "old";
    let keys = Keys::of(room);
    let mut bytes = 0;
    for seq in 1..=30 {
        let text = format!("old {seq}");
        bytes += text.len();
        redis::cmd("XADD")
            .arg(&keys.history)
            .arg(format!("{seq}-0"))
            .arg("node")
            .arg("m")
            .arg("line")
            .arg(text)
            .exec(&mut bench.connection)
            .expect("XADD");
    }
    redis::pipe()
        .cmd("SET")
        .arg(&keys.seq)
        .arg(30)
        .cmd("SET")
        .arg(&keys.size)
        .arg(bytes)
        .exec(&mut bench.connection)
        .expect("SET");
    bench.settings.history = 20;
    let batch: Vec<_> = (1..=3)
        .map(|count| line(count, room, &format!("new {count}")))
        .collect();
    assert_eq!(bench.publish(&batch), [33]);
    let held = checked_history(&mut bench, room);
    // Over 20 lines: down to 15/16 of it, the oldest whole entries first.
    assert_eq!(held.len(), 20 - 20 / 16);
    assert_eq!(held[0], (15, "old 15".to_owned()));
    assert_eq!(
        held[held.len() - 3..],
        [
            (31, "new 1".to_owned()),
            (32, "new 2".to_owned()),
            (33, "new 3".to_owned())
        ]
    );
    bench.stop();
}

/// No line can break a batch: a retry that skips the lines Redis had
/// finds where the rest begin, whatever the lines hold.
#[test]
fn odd_lines_survive_a_retry() {
    let mut bench = Bench::start();
    let mut listening = bench.listening();
    let mut listener = listening.as_pubsub();
    listener.subscribe(channel("odd")).expect("SUBSCRIBE");
    let odd = ["1:x", "", "a\nb", "é:é", "12", " "];
    let batch: Vec<_> = (1..=6)
        .map(|count| line(count, "odd", odd[count as usize - 1]))
        .collect();
    assert_eq!(bench.publish(&batch[..3]), [3]);
    assert_eq!(bench.resend(&batch), [6]);
    let odd = odd.map(String::from);
    let kept: Vec<_> = (1..).zip(odd.iter().cloned()).collect();
    assert_eq!(checked_history(&mut bench, "odd"), kept);
    let heard = heard(&mut listener, &mut bench.connection, &["odd"]);
    assert_eq!(heard, [heard_from_n(1, &odd)]);
    drop(listener);
    drop(listening);
    bench.stop();
}

/// A publisher whose reply never came (Redis was busy past the reply
/// time, and may have run the call once free) sends the batch again with
/// the check: nothing is kept twice.
#[test]
fn a_lost_reply_is_retried_with_the_check() {
    let mut bench = Bench::start();
    let settings = LinkSettings {
        reply_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
        ..LinkSettings::default()
    };
    let target = Arc::new(Target::new(&bench.redis.url(), &settings).expect("target"));
    let shared = Arc::new(LinkState::new(1));
    let (_wake, woken) = crossbeam_channel::bounded::<()>(0);
    let (publishing, _published) = crossbeam_channel::bounded::<()>(0);
    let mut publisher = Publisher {
        _publishing: publishing,
        target: Arc::clone(&target),
        shared,
        woken,
        script: Script::new(PUBLISH_SCRIPT),
        rules_script: Script::new(super::super::rules::RULES_SCRIPT),
        node: "n".to_owned(),
        publish_command: "PUBLISH",
        sender: "n/1".to_owned(),
        count: 0,
        renewed: HashMap::new(),
    };
    let mut router = Router::new(
        Arc::clone(&target),
        Topology::single(&target.addr),
        Some(target.connect().expect("connects")),
    );
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut bench.connection)
        .expect("RESETSTAT");

    // Redis busy for a while in another client's script: the publisher's
    // call waits unread, past its reply time, and runs once Redis is free.
    let mut blocker = bench.listening();
    let mut probe = bench.redis.connection(&bench.redis.url());
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let busy = thread::spawn(move || {
        let script = Script::new(
            r"
local function now()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
end
local start = now()
while now() - start < tonumber(ARGV[1]) do end
return 1
",
        );
        let _: i64 = script.arg(1500).invoke(&mut blocker).expect("busy");
    });
    // Busy once a PING goes unanswered.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if redis::cmd("PING").exec(&mut probe).is_err() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "Redis never got busy");
    }
    let batch: Vec<_> = (1..=3)
        .map(|count| line(count, "lobby", &format!("line {count}")))
        .collect();
    assert!(publisher.publish(&mut router, &batch));
    busy.join().expect("the busy script ended");
    drop(probe);

    let lines = ["line 1", "line 2", "line 3"].map(String::from);
    assert_eq!(
        checked_history(&mut bench, "lobby"),
        (1..).zip(lines).collect::<Vec<_>>()
    );
    // At least one more call went, and the lines were kept once, whether
    // the first call ran before its retry, after it, or not at all.
    assert!(bench.redis.calls("evalsha") >= 2);
    assert_eq!(bench.redis.calls("xadd"), 1);
    drop(router);
    bench.stop();
}

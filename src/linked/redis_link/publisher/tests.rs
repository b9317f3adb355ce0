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

    /// Runs the batch's pipeline as node `n`, run `n/1`: each call's reply.
    fn publish(&mut self, batch: &[(u64, ToPublish)]) -> Vec<u64> {
        pipeline(&self.script, &self.settings, "n/1", "n", "PUBLISH", batch)
            .query(&mut self.connection)
            .expect("pipeline runs")
    }

    /// A connection to listen on, whose reads end within 10 s.
    fn listening(&self) -> Connection {
        let connection = self.redis.connection(&self.redis.url());
        connection
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        connection
    }

    /// `room`'s history: (seq, line) in order.
    fn history(&mut self, room: &str) -> Vec<(u64, String)> {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(Keys::of(room).history)
            .arg("-")
            .arg("+")
            .query(&mut self.connection)
            .expect("XRANGE");
        entries
            .into_iter()
            .map(|(id, fields)| {
                let seq = id.trim_end_matches("-0").parse().expect("seq-0");
                let line = fields
                    .into_iter()
                    .find(|(field, _)| field == "line")
                    .map(|(_, line)| line)
                    .expect("a line");
                (seq, line)
            })
            .collect()
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
/// of them gets after the calls: `seq node line`s, in order, per room.
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
        } else {
            heard[index].push(payload);
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
    assert_eq!(bench.publish(&batch), [6, 2]);
    assert_eq!(bench.publish(&batch), [0, 0]);

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
    let call = pipeline(
        &bench.script,
        &bench.settings,
        "n/1",
        "n",
        "PUBLISH",
        &batch,
    );
    let failed = call.query::<Vec<u64>>(&mut bench.connection);
    assert!(failed.is_err(), "the call fails half way");
    // The retry finds its lines marked as done.
    assert_eq!(bench.publish(&batch), [0]);

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
    let other = pipeline(
        &bench.script,
        &bench.settings,
        "m/1",
        "m",
        "PUBLISH",
        &[line(1, "lobby", "hi")],
    );
    let _: Vec<u64> = other.query(&mut bench.connection).expect("pipeline runs");
    let mut batch: Vec<_> = (1..=40)
        .map(|count| {
            let room = if count % 2 == 0 { "den" } else { "lobby" };
            line(count, room, &format!("{room} {count}"))
        })
        .collect();
    batch[9].1.topic = Some("ten".into());
    let plan = pipeline(
        &bench.script,
        &bench.settings,
        "n/1",
        "n",
        "PUBLISH",
        &batch,
    );
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

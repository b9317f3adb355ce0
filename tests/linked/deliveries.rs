//! How what the link delivers reaches the hub: put into the hub's queue by
//! the link's own threads (no thread of its own between), what it had at
//! start first, and a link that stops while that queue is full still ends.

use std::thread;

use secure_chat::hub::Event;
use secure_chat::queue;
use secure_chat_test_support::{frame, thread_names, TIMEOUT};

use super::*;

/// The names of the link's threads, as /proc shows them (cut to 15 bytes):
/// the three of every link, and those that listen to a cluster.
const LINK_THREADS: [&str; 5] = [
    "redis-publish",
    "redis-subscribe",
    "redis-names",
    "redis-hear",
    "redis-hear-shar",
];

/// Gives `room` a past of one line, kept as the link keeps a batch, so
/// that a node joining it reads that past (`XREVRANGE`) before it can
/// deliver it.
fn give_a_past(redis: &Redis, room: &str) {
    let mut raw = redis.connection(&redis.url());
    redis::pipe()
        .cmd("XADD")
        .arg(format!("room:{{{room}}}:history"))
        .arg("1-0")
        .arg("node")
        .arg("ghost")
        .arg("lines")
        .arg(frame(&["said before"]))
        .ignore()
        .cmd("SET")
        .arg(format!("room:{{{room}}}:seq"))
        .arg(1)
        .ignore()
        .exec(&mut raw)
        .expect("a past kept");
}

/// Waits until the subscriber has read a room's past: the first
/// `XREVRANGE` this Redis ran.
fn wait_past_read(redis: &Redis) {
    assert!(
        wait_until(|| redis.calls("xrevrange") >= 1),
        "the room's past was never read"
    );
}

/// A line crosses two linked servers, and no thread of either stands
/// between its link and its hub: the subscriber puts it in the hub's
/// queue itself.
#[test]
fn a_line_reaches_the_hub_with_no_forwarding_thread() {
    let two = Two::start(&[]);
    let (redis, pki) = (&two.redis, &two.pki);
    let mut alice = person(&two.a, pki, "alice");
    redis.wait_subscribed("#lobby", 1);
    let bob = person(&two.b, pki, "bob");
    redis.wait_subscribed("#lobby", 2);
    alice.send("across");
    assert_eq!(bob.recv_non_notice(), "chat alice across");
    let names = thread_names();
    // Other tests' servers and links run in this process too: only ours
    // are known to be there, and no link may have a thread beyond its
    // own.
    let subscribers = names.iter().filter(|n| *n == "redis-subscribe").count();
    assert!(subscribers >= 2, "{names:?}");
    let strays: Vec<&String> = names
        .iter()
        .filter(|name| name.starts_with("redis-") && !LINK_THREADS.contains(&name.as_str()))
        .collect();
    assert!(strays.is_empty(), "threads of no link's: {strays:?}");
    drop((alice, bob));
    two.stop();
}

/// What the link had at start (the server bans) goes to the sink before
/// anything its threads have for it, even what they had before the sink
/// was given; a second sink is refused.
#[test]
fn what_the_link_had_at_start_comes_first() {
    let redis = Redis::start(&[]);
    let mut raw = redis.connection(&redis.url());
    let bans = "ban-list-at-start";
    redis::cmd("SET")
        .arg("chat:server-bans")
        .arg(bans)
        .query::<()>(&mut raw)
        .expect("SET");
    give_a_past(&redis, "#early");
    let mut link = RedisLink::open(&redis.url(), "a", quick_link()).expect("link");
    // The subscriber has read the room's past, to deliver with no sink
    // given yet.
    link.join_room("#early");
    wait_past_read(&redis);
    let (sink, deliveries) = crossbeam_channel::bounded(16);
    assert!(link.deliver_to(Box::new(sink)));
    let (other, _) = crossbeam_channel::bounded(16);
    assert!(!link.deliver_to(Box::new(other)), "a second sink");
    assert_eq!(
        deliveries.recv_timeout(TIMEOUT),
        Ok(Delivery::ServerBans(Some(bans.to_owned())))
    );
    match deliveries.recv_timeout(TIMEOUT) {
        Ok(Delivery::Recent { room, .. }) => assert_eq!(room, "#early"),
        other => panic!("not the room's past: {other:?}"),
    }
    drop(link);
}

/// The hub's queue is full and nobody reads it (the hub is behind, or
/// done): the link's threads wait in it with something to deliver, and
/// the link still stops when dropped, within a few polls; what they had
/// was not put in.
#[test]
fn a_link_stopping_with_the_hubs_queue_full_ends() {
    let redis = Redis::start(&[]);
    give_a_past(&redis, "#full");
    let (events, hub) = queue::bounded(1);
    events.send(Event::Shutdown).expect("room for one");
    let link = RedisLink::open(&redis.url(), "a", quick_link()).expect("link");
    let mut linked = Linked::new(link);
    linked.forward(events);
    linked.entered(RoomId(1), &|| Some("#full".to_owned()));
    // The subscriber has read the room's past, which goes into a queue
    // without room.
    wait_past_read(&redis);
    let (done, ended) = crossbeam_channel::bounded(1);
    let stopping = thread::spawn(move || {
        drop(linked);
        let _ = done.send(());
    });
    assert!(ended.recv_timeout(TIMEOUT).is_ok(), "the link never ended");
    stopping.join().expect("the drop");
    let left = hub.close();
    assert_eq!(left.len(), 1, "only what filled the queue");
    assert!(matches!(left[0], Event::Shutdown));
}

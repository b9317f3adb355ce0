//! How what the link delivers reaches the hub: put into the hub's queue by
//! the link's own threads (no thread of its own between), what it had at
//! start first, and a link that stops while that queue is full still ends.

use std::thread;

use secure_chat::hub::Event;
use secure_chat::queue;
use secure_chat_test_support::TIMEOUT;

use super::*;

/// The names of this process's threads, as /proc shows them (cut to 15
/// bytes).
fn thread_names() -> Vec<String> {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
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
    // Other tests' servers run in this process too: only ours are known
    // to be there, and none may have one.
    let subscribers = names.iter().filter(|n| *n == "redis-subscribe").count();
    assert!(subscribers >= 2, "{names:?}");
    assert!(!names.iter().any(|n| n == "redis-deliver"), "{names:?}");
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
    let mut link = RedisLink::open(&redis.url(), "a", quick_link()).expect("link");
    // The subscriber has the room's past to deliver, and no sink yet.
    link.join_room("#early");
    redis.wait_subscribed("#early", 1);
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
    let (events, hub) = queue::bounded(1);
    events.send(Event::Shutdown).expect("room for one");
    let link = RedisLink::open(&redis.url(), "a", quick_link()).expect("link");
    let mut linked = Linked::new(link);
    linked.forward(events);
    linked.entered(RoomId(1), &|| Some("#full".to_owned()));
    // Subscribed: the room's past is on its way into a queue without room.
    redis.wait_subscribed("#full", 1);
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

//! A room joined over a Redis Cluster is heard at once, not at its
//! master's listening thread's next look: the subscriber rings the
//! master's bell, which ends the thread's read.

use std::time::{Duration, Instant};

use secure_chat::linked::redis_link::{Delivery, LinkSettings, RedisLink};
use secure_chat_test_support::{quick_link, wait_until, RedisCluster};

/// Far longer than a rung subscription takes (milliseconds): one that
/// waited for the thread's next look would come too late. (Not longer:
/// stopping the link waits for each thread's next look.)
const POLL: Duration = Duration::from_secs(5);

#[test]
fn a_room_joined_is_heard_long_before_a_poll() {
    let cluster = RedisCluster::start();
    let slow = LinkSettings {
        poll: POLL,
        ..quick_link()
    };
    let (listener, heard) = RedisLink::start(&cluster.url(), "l", slow).expect("the listener");
    let (speaker, _) = RedisLink::start(&cluster.url(), "s", quick_link()).expect("the speaker");
    assert!(
        wait_until(|| listener.is_up() && speaker.is_up()),
        "the links never came up"
    );
    let joined = Instant::now();
    listener.join_room("#birch");
    let deadline = joined + POLL * 2;
    let mut said = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match heard.recv_timeout(left) {
            Ok(Delivery::Recent { room, .. }) if room == "#birch" => {
                // Subscribed: what is said now is heard as a line.
                speaker
                    .publish("#birch", "chat s hello")
                    .expect("published");
                said = true;
            }
            Ok(Delivery::Lines { room, lines, .. }) if room == "#birch" => {
                assert!(said, "a line before the room's past: {lines:?}");
                assert_eq!(lines, ["chat s hello"]);
                break;
            }
            Ok(_) => {}
            Err(error) => panic!("the room was not heard within two polls: {error}"),
        }
    }
    assert!(
        joined.elapsed() < POLL / 2,
        "heard after {:?}",
        joined.elapsed()
    );
}

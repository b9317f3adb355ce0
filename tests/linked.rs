//! Several chat servers, one chat: servers in this process, linked
//! through a `redis-server` of the test's own (Debian's package), started
//! on a free loopback port and stopped by its process id.

use std::time::{Duration, Instant};

use secure_chat::cluster::Settings;
use secure_chat_test_support::{test_limits, Pki, Redis, TestClient, TestServer, TIMEOUT};

/// Link settings that notice trouble quickly.
fn quick() -> Settings {
    Settings {
        ping_every: Duration::from_millis(300),
        reply_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        recent: 200,
        ..Settings::default()
    }
}

fn node(pki: &Pki, redis: &Redis, name: &str) -> TestServer {
    TestServer::start_linked(pki, test_limits(), &redis.url(), name, quick())
}

/// Waits until `count` servers listen to `room` in Redis.
fn wait_subscribed(redis: &Redis, room: &str, count: i64) {
    let mut connection = redis.connection(&redis.url());
    let channel = format!("room:{{{room}}}");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_, subscribed): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query::<Vec<(String, i64)>>(&mut connection)
            .expect("PUBSUB NUMSUB")
            .remove(0);
        if subscribed == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{subscribed} servers in {room}, not {count}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connects, takes `nick`, and waits until the room hears it.
fn person(server: &TestServer, pki: &Pki, nick: &str) -> TestClient {
    let mut client = TestClient::connect(server.addr, &pki.ca);
    client.send(&format!("/nick {nick}"));
    client.recv_until(|line| line == format!("notice you are now {nick}"));
    client.nick = nick.to_owned();
    client
}

#[test]
fn a_room_line_reaches_every_server() {
    let redis = Redis::start(&[]);
    let pki = Pki::new();
    let a = node(&pki, &redis, "a");
    let b = node(&pki, &redis, "b");
    let mut alice = person(&a, &pki, "alice");
    let bob = person(&b, &pki, "bob");
    wait_subscribed(&redis, "#lobby", 2);
    alice.send("hello from a");
    assert_eq!(alice.recv_non_notice(), "chat alice hello from a");
    assert_eq!(bob.recv_non_notice(), "chat alice hello from a");
    drop((alice, bob));
    a.stop();
    b.stop();
}

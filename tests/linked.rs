//! Several chat servers, one chat: servers in this process, linked
//! through a `redis-server` of the test's own (Debian's package), started
//! on a free loopback port and stopped by its process id.

use secure_chat_test_support::{quick_link, test_limits, Pki, Redis, TestClient, TestServer};

fn node(pki: &Pki, redis: &Redis, name: &str) -> TestServer {
    TestServer::start_linked(pki, test_limits(), &redis.url(), name, quick_link())
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
    redis.wait_subscribed("#lobby", 2);
    alice.send("hello from a");
    assert_eq!(alice.recv_non_notice(), "chat alice hello from a");
    assert_eq!(bob.recv_non_notice(), "chat alice hello from a");
    drop((alice, bob));
    a.stop();
    b.stop();
}

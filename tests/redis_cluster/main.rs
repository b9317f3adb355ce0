//! Chat servers over a Redis Cluster of the test's own: six
//! `redis-server` processes on loopback (tests/support's `RedisCluster`),
//! three masters with a replica each, stopped by process id. The harness
//! itself is checked first (`harness.rs`).

// Linked servers only: built with the `redis` feature (on by default).
#![cfg(feature = "redis")]

// Two servers as one chat, and thirty rooms' load spread over the
// masters: `chat.rs`. A master killed mid-burst: `failover.rs`. A
// master that hangs: `hung.rs`. The listening threads, counted across a
// failover: `threads.rs`.
mod bell;
mod chat;
mod failover;
mod harness;
mod hung;
mod threads;

use secure_chat::linked::redis_link::name_key;
use secure_chat::server::Limits;
use secure_chat_test_support::{
    quick_link, slot, test_limits, wait_until, Pki, RedisCluster, TestClient, TestServer,
};

/// A cluster of the test's own and two chat servers linked through it,
/// `a` and `b`, each given the URL of one node only (node 0, shard 0's
/// first master, or for `b` another master): the servers find the rest.
struct Two {
    cluster: RedisCluster,
    pki: Pki,
    a: TestServer,
    b: TestServer,
}

impl Two {
    fn start() -> Two {
        Two::start_on(None)
    }

    /// `a` given node 0's URL, `b` that of shard `b_on`'s master if given
    /// (node 0's too if not).
    fn start_on(b_on: Option<usize>) -> Two {
        let cluster = RedisCluster::start();
        let pki = Pki::new();
        let url = cluster.url();
        let b_url = match b_on {
            Some(shard) => format!("redis://127.0.0.1:{}", cluster.masters()[shard].port),
            None => url.clone(),
        };
        // Every test client comes from one address, which may make ten
        // rooms a minute by default; the tests make thirty.
        let limits = Limits {
            rooms_per_minute: 100,
            ..test_limits()
        };
        let a = TestServer::start_linked(&pki, limits, &url, "a", quick_link());
        let b = TestServer::start_linked(&pki, limits, &b_url, "b", quick_link());
        Two { cluster, pki, a, b }
    }

    /// Stops both servers, checking that they stopped; the cluster's
    /// processes go when it is dropped.
    fn stop(self) {
        self.a.stop();
        self.b.stop();
    }
}

/// The shard whose master holds `room`'s keys and channel
/// (`room:{#name}...`, one hash tag for them all).
fn shard_of_room(room: &str) -> usize {
    RedisCluster::shard_of(slot(&format!("room:{{{room}}}")))
}

/// The shard whose master holds `nick`'s name key.
fn shard_of_name(nick: &str) -> usize {
    RedisCluster::shard_of(slot(&name_key(nick)))
}

/// How many connections listen to `room`'s channel anywhere in the
/// cluster: sharded subscriptions (`PUBSUB SHARDNUMSUB`, on the nodes of
/// the room's shard) and classic ones (`PUBSUB NUMSUB`, which each node
/// counts for itself), over every running node.
fn subscribers(cluster: &RedisCluster, room: &str) -> i64 {
    let channel = format!("room:{{{room}}}");
    let shards = 0..3;
    let nodes = cluster
        .masters()
        .into_iter()
        .chain(shards.filter_map(|shard| cluster.replica(shard)));
    let mut count = 0;
    for node in nodes {
        let mut connection = cluster.connection(node.port);
        for kind in ["SHARDNUMSUB", "NUMSUB"] {
            let (_, subscribed): (String, i64) = redis::cmd("PUBSUB")
                .arg(kind)
                .arg(&channel)
                .query(&mut connection)
                .unwrap_or_else(|err| panic!("PUBSUB {kind} on {}: {err}", node.port));
            count += subscribed;
        }
    }
    count
}

/// Waits until `count` servers listen to `room`: a server joins a room's
/// channel a moment after its first user enters it.
fn wait_subscribed(cluster: &RedisCluster, room: &str, count: i64) {
    let mut subscribed = 0;
    let reached = wait_until(|| {
        subscribed = subscribers(cluster, room);
        subscribed == count
    });
    assert!(reached, "{subscribed} subscribers to {room}, not {count}");
}

/// The first words of the notice `text` (`LINK_DOWN`, `LINK_UP`): the
/// text before its colon, as a client is shown it. `LINK_UP`'s begin
/// `LINK_UP_HISTORY_LOST` too: a line that starts with them says the link
/// is back, with history kept or lost.
fn notice(text: &str) -> String {
    format!("notice {}", &text[..text.find(':').expect("a colon")])
}

/// Connects, takes `nick`, and waits until the server confirms it.
fn person(server: &TestServer, pki: &Pki, nick: &str) -> TestClient {
    let mut client = TestClient::connect(server.addr, &pki.ca);
    client.send(&format!("/nick {nick}"));
    client.recv_until(|line| line == format!("notice you are now {nick}"));
    client.nick = nick.to_owned();
    client
}

/// `client` leaves its room for `room` and waits until it is in.
fn enter(client: &mut TestClient, room: &str) {
    client.send(&format!("/join {room}"));
    let entered = format!("notice you are in {room} (");
    client.recv_until(|line| line.starts_with(&entered));
}

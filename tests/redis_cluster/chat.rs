//! Two chat servers over the cluster act as one chat: room lines in one
//! order on both, a room's topic and past from another shard, private
//! lines, names and `/who` across them, even given different nodes; and
//! thirty rooms' load spread evenly over the three masters.

use std::collections::HashMap;

use secure_chat_test_support::{cpu_ns, slot, RedisCluster, TestClient};

use crate::{enter, person, shard_of_name, shard_of_room, wait_subscribed, Two};

/// Both servers' users see each other's lobby lines, all in one order,
/// whatever shard the room is on; a room on another shard keeps its
/// topic and past for a newcomer on the other server; private lines
/// cross; a name taken on one server is refused on the other.
#[test]
fn two_servers_over_a_cluster_are_one_chat() {
    const EACH: usize = 40;
    let two = Two::start();
    let (cluster, pki) = (&two.cluster, &two.pki);
    let mut alice = person(&two.a, pki, "alice");
    let mut bob = person(&two.b, pki, "bob");
    wait_subscribed(cluster, "#lobby", 2);
    for i in 0..EACH {
        alice.send(&format!("a{i}"));
        bob.send(&format!("b{i}"));
    }
    let chat_lines = |who: &TestClient| -> Vec<String> {
        (0..2 * EACH).map(|_| who.recv_non_notice()).collect()
    };
    let (seen_a, seen_b) = (chat_lines(&alice), chat_lines(&bob));
    assert_eq!(seen_a, seen_b, "the two servers disagree on the order");
    for (nick, tag) in [("alice", 'a'), ("bob", 'b')] {
        let said: Vec<&String> = seen_a
            .iter()
            .filter(|line| line.starts_with(&format!("chat {nick} ")))
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("chat {nick} {tag}{i}")).collect();
        assert_eq!(said, expected.iter().collect::<Vec<_>>());
    }

    // A room whose shard is not the lobby's, nor that of the node the
    // servers were given.
    let room = "#ash";
    assert_ne!(shard_of_room(room), shard_of_room("#lobby"));
    assert_ne!(shard_of_room(room), 0);
    enter(&mut alice, room);
    alice.send("/topic oaks and ashes");
    alice
        .recv_until(|line| line == format!("notice alice set the topic of {room}: oaks and ashes"));
    alice.send("first");
    assert_eq!(alice.recv_non_notice(), "chat alice first");
    bob.send(&format!("/join {room}"));
    bob.recv_until(|line| line.starts_with(&format!("notice you are in {room} (")));
    assert_eq!(
        bob.recv(),
        format!("notice topic of {room}: oaks and ashes")
    );
    assert_eq!(bob.recv(), "history chat alice first");
    bob.send("second");
    assert_eq!(alice.recv_non_notice(), "chat bob second");
    assert_eq!(bob.recv_non_notice(), "chat bob second");

    alice.send("/msg bob psst");
    assert_eq!(bob.recv_non_notice(), "private alice bob psst");
    assert_eq!(alice.recv_non_notice(), "private alice bob psst");
    bob.send("/msg alice likewise");
    assert_eq!(alice.recv_non_notice(), "private bob alice likewise");
    assert_eq!(bob.recv_non_notice(), "private bob alice likewise");

    // Held on server a, refused on b: nicks whose name buckets lie on the
    // three shards (alice 0, erin 1, ivan 2).
    assert_eq!(["alice", "erin", "ivan"].map(shard_of_name), [0, 1, 2]);
    let mut carol = person(&two.a, pki, "carol");
    let erin = person(&two.a, pki, "erin");
    let ivan = person(&two.a, pki, "ivan");
    let mut other = TestClient::connect(two.b.addr, &pki.ca);
    for nick in ["alice", "erin", "ivan"] {
        other.send(&format!("/nick {nick}"));
        assert_eq!(
            other.recv_until(|line| line.starts_with("error ")),
            format!("error nick {nick} is taken on another server; choose another")
        );
    }
    carol.send("/msg bob hello from a");
    assert_eq!(bob.recv_non_notice(), "private carol bob hello from a");
    drop((alice, bob, carol, erin, ivan, other));
    two.stop();
}

/// Servers given different nodes still count each other: a classic
/// `PUBLISH` on a cluster counts only the subscribers of the node that
/// ran it, so a private line to a name whose bucket is on a third master
/// must still be told delivered (and echoed to its sender), and a `/who`
/// must wait for both servers' answers.
#[test]
fn servers_on_different_nodes_count_each_other() {
    // b is given shard 1's master; ivan's and judy's buckets are on shard
    // 2, which is neither server's node nor the classic pub/sub's.
    let two = Two::start_on(Some(1));
    let pki = &two.pki;
    let classic = RedisCluster::shard_of(slot("chat:server-bans"));
    for nick in ["ivan", "judy"] {
        assert_eq!(shard_of_name(nick), 2);
        assert_ne!(shard_of_name(nick), classic);
    }
    let mut alice = person(&two.a, pki, "alice");
    let carol = person(&two.a, pki, "carol");
    let mut ivan = person(&two.b, pki, "ivan");
    let judy = person(&two.b, pki, "judy");
    wait_subscribed(&two.cluster, "#lobby", 2);
    // Others' news may come in between: each answer is looked for.
    let answer = |client: &TestClient, start: &str| {
        client.recv_until(|line| line.starts_with(start) || line.starts_with("error "))
    };

    alice.send("/msg ivan across");
    assert_eq!(answer(&ivan, "private "), "private alice ivan across");
    assert_eq!(answer(&alice, "private "), "private alice ivan across");
    ivan.send("/msg alice and back");
    assert_eq!(answer(&alice, "private "), "private ivan alice and back");
    assert_eq!(answer(&ivan, "private "), "private ivan alice and back");

    for asker in [&mut alice, &mut ivan] {
        asker.send("/who");
        assert_eq!(
            answer(asker, "notice in "),
            "notice in #lobby (4): alice, carol, ivan, judy"
        );
    }
    drop((alice, carol, ivan, judy));
    two.stop();
}

/// Thirty rooms, ten on each master's slots, the same load on each:
/// each master does between 20 % and 45 % of the masters' work.
const ROOMS: [&str; 30] = [
    "ash", "birch", "cedar", "elm", "fir", "hazel", "larch", "maple", "oak", "pine", "rowan",
    "willow", "yew", "alder", "aspen", "beech", "cherry", "holly", "lime", "olive", "plum",
    "spruce", "teak", "walnut", "apple", "pear", "fig", "lotus", "rose", "violet",
];

/// A burst over thirty rooms split 10/10/10 over the shards by their
/// slots: the Redis CPU the three masters spend meanwhile is shared
/// between them within 20 % and 45 % each. Every room has a sender on
/// server a and a listener on server b, each line is checked to arrive.
#[test]
fn thirty_rooms_spread_their_load_over_the_masters() {
    const LINES: usize = 150;
    let rooms: Vec<String> = ROOMS.iter().map(|name| format!("#{name}")).collect();
    let mut per_shard = [0; 3];
    for room in &rooms {
        per_shard[shard_of_room(room)] += 1;
    }
    assert_eq!(
        per_shard,
        [10, 10, 10],
        "the rooms' slots do not split evenly"
    );

    let two = Two::start();
    let (cluster, pki) = (&two.cluster, &two.pki);
    let mut pairs: Vec<(TestClient, TestClient)> = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        let mut sender = person(&two.a, pki, &format!("s{i}"));
        let mut listener = person(&two.b, pki, &format!("l{i}"));
        enter(&mut sender, room);
        enter(&mut listener, room);
        pairs.push((sender, listener));
    }
    for room in &rooms {
        wait_subscribed(cluster, room, 2);
    }

    let masters = cluster.masters();
    let before: Vec<u64> = masters.iter().map(|m| cpu_ns(m.pid)).collect();
    for k in 0..LINES {
        for (sender, _) in pairs.iter_mut() {
            sender.send(&k.to_string());
        }
    }
    for (sender, listener) in &pairs {
        for k in 0..LINES {
            let expected = format!("chat {} {k}", sender.nick);
            assert_eq!(listener.recv_non_notice(), expected);
            assert_eq!(sender.recv_non_notice(), expected);
        }
    }
    let spent: Vec<u64> = masters
        .iter()
        .zip(&before)
        .map(|(m, before)| cpu_ns(m.pid) - before)
        .collect();
    let total: u64 = spent.iter().sum();
    let shares: HashMap<u16, f64> = masters
        .iter()
        .zip(&spent)
        .map(|(m, &ns)| (m.port, ns as f64 / total as f64))
        .collect();
    eprintln!(
        "{} room lines: masters' CPU {:?} ns, shares {shares:?}",
        LINES * rooms.len(),
        spent
    );
    for (port, share) in &shares {
        assert!(
            (0.20..=0.45).contains(share),
            "master {port} did {:.0} % of the masters' work: {shares:?}",
            share * 100.0
        );
    }
    drop(pairs);
    two.stop();
}

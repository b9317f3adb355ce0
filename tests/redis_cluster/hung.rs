//! A master that hangs (SIGSTOP: a frozen machine, its connections open
//! and silent) rather than dies: its replica takes over, and the servers
//! must notice on their own that the hung master's listening connection
//! no longer answers, or its rooms stay deaf.

use std::time::Instant;

use secure_chat::linked::{LINK_DOWN, LINK_UP};
use secure_chat_test_support::{slot, RedisCluster, TestClient};

use crate::{enter, notice, person, shard_of_room, wait_subscribed, Two};

/// `client` is told what the notice `text` says (within the support
/// crate's wait for a line).
fn told(client: &TestClient, text: &str) {
    let wanted = notice(text);
    client.recv_until(|line| line.starts_with(&wanted));
}

/// `from` says `text`; `to`, in the same room on the other server,
/// hears it.
fn crosses(from: &mut TestClient, to: &TestClient, text: &str) {
    from.send(text);
    let wanted = format!("chat {} {text}", from.nick);
    to.recv_until(|line| line == wanted);
}

/// A room on shard 2, a user of it on each server. Shard 2's master is
/// frozen while its replica is kept from taking over: both users are
/// told the link is down, which only a ping of the hung master's
/// listening connection can show (the cluster's masters have not
/// changed). Then the replica takes over: both are told the link is
/// back, and a line said on one server reaches the other through the new
/// master. The frozen master is neither the node the servers were given
/// nor the one that carries the classic channels, so only the servers'
/// connections to it per master lead to it. Then it is thawed, rejoins
/// as a replica, and the room still carries lines.
#[test]
fn a_hung_master_is_noticed_and_left_for_its_replica() {
    let mut two = Two::start();
    let room = "#ash";
    let victim = shard_of_room(room);
    assert_eq!(victim, 2, "{room}");
    let classic = RedisCluster::shard_of(slot("chat:server-bans"));
    assert_ne!(
        victim, classic,
        "the classic channels' node would be frozen"
    );
    let mut a = person(&two.a, &two.pki, "amy");
    let mut b = person(&two.b, &two.pki, "bo");
    enter(&mut a, room);
    enter(&mut b, room);
    wait_subscribed(&two.cluster, room, 2);
    crosses(&mut a, &b, "before");

    two.cluster.hold_failover(victim, true);
    let frozen = Instant::now();
    two.cluster.freeze_master(victim);
    told(&a, LINK_DOWN);
    told(&b, LINK_DOWN);
    eprintln!(
        "both told the link was down {:?} after the freeze",
        frozen.elapsed()
    );
    two.cluster.hold_failover(victim, false);
    two.cluster.wait_taken_over(victim);
    eprintln!(
        "shard {victim}'s replica took over {:?} after the freeze",
        frozen.elapsed()
    );
    told(&a, LINK_UP);
    told(&b, LINK_UP);
    crosses(&mut a, &b, "after the freeze");
    crosses(&mut b, &a, "and back");

    two.cluster.thaw(victim);
    crosses(&mut a, &b, "after the thaw");
    drop((a, b));
    two.stop();
}

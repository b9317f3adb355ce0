//! The cluster harness: slots as Redis computes them, a cluster that
//! forms with its replicas attached, keys served by the master of their
//! slot, a killed master's replica promoted, every process gone at the end.

use std::path::Path;

use secure_chat_test_support::{cpu_ns, slot, RedisCluster, SHARD_SLOTS};

/// Redis Cluster's check value for its CRC16, and slots `CLUSTER KEYSLOT`
/// gave for keys of the chat's shapes.
#[test]
fn slots_are_computed_as_redis_does() {
    assert_eq!(slot("123456789"), 0x31C3);
    assert_eq!(slot("room:{lobby}"), 10294);
    assert_eq!(slot("room:{lobby}:seq"), 10294);
    assert_eq!(slot("name:{alice}"), 749);
    assert_eq!(slot("name:{bob}"), 8955);
    assert_eq!(slot("room:{room2}"), 2052);
    // Only the first tag counts.
    assert_eq!(slot("{x}{y}"), slot("x"));
    assert_eq!(RedisCluster::shard_of(0), 0);
    assert_eq!(RedisCluster::shard_of(5461), 1);
    assert_eq!(RedisCluster::shard_of(16383), 2);
}

fn keyslot(connection: &mut redis::Connection, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(connection)
        .expect("CLUSTER KEYSLOT")
}

#[test]
fn the_cluster_forms_routes_keys_and_survives_a_master() {
    let mut cluster = RedisCluster::start();
    eprintln!("cluster of six up in {:?}", cluster.started_in);
    let masters = cluster.masters();
    let replicas: Vec<_> = (0..3)
        .map(|shard| cluster.replica(shard).unwrap())
        .collect();
    let mut pids: Vec<u32> = masters.iter().chain(&replicas).map(|m| m.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 6, "{masters:?} {replicas:?}");

    // Every key is served by its slot's master alone; the others send
    // the client there.
    // The last ones: an empty tag is no tag, an unclosed one neither.
    let keys = [
        "room:{#lobby}:seq",
        "name:{alice}",
        "x",
        "room:{#tea}",
        "chat:epoch",
        "a{}b",
        "}{x}",
        "{x",
    ];
    let mut any = cluster.connection(masters[0].port);
    for key in keys {
        let slot = slot(key);
        assert_eq!(keyslot(&mut any, key), slot, "{key}");
        let owner = RedisCluster::shard_of(slot);
        for (shard, master) in masters.iter().enumerate() {
            let mut connection = cluster.connection(master.port);
            let set: redis::RedisResult<()> =
                redis::cmd("SET").arg(key).arg(shard).query(&mut connection);
            if shard == owner {
                set.unwrap_or_else(|err| panic!("SET {key} on its master: {err}"));
            } else {
                let err = set.expect_err("SET on another shard's master");
                assert_eq!(err.code(), Some("MOVED"), "{err}");
                let said = err.to_string();
                let (first, last) = SHARD_SLOTS[owner];
                assert!((first..=last).contains(&slot));
                assert!(
                    said.contains(&format!("{slot} 127.0.0.1:{}", masters[owner].port)),
                    "{said}"
                );
            }
        }
    }

    // Work shows in the process' CPU time.
    let before = cpu_ns(masters[1].pid);
    let mut shard1 = cluster.connection(masters[1].port);
    let key = "room:{lobby}:seq";
    assert_eq!(RedisCluster::shard_of(slot(key)), 1);
    for _ in 0..500 {
        let _: i64 = redis::cmd("INCR").arg(key).query(&mut shard1).unwrap();
    }
    assert!(cpu_ns(masters[1].pid) > before);
    // Replicated before the kill: WAIT counts the replicas that have it.
    let acknowledged: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut shard1)
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut shard1)
        .unwrap();
    assert_eq!(acknowledged, 1, "{info}");
    drop(shard1);

    let took = cluster.kill_master(1);
    eprintln!("shard 1's replica promoted {took:?} after its master's kill");
    assert!(!Path::new(&format!("/proc/{}", masters[1].pid)).exists());
    let now = cluster.masters();
    assert_eq!(now[1], replicas[1]);
    assert_eq!((now[0], now[2]), (masters[0], masters[2]));
    assert_eq!(cluster.replica(1), None);
    let mut promoted = cluster.connection(now[1].port);
    let seq: i64 = redis::cmd("INCR").arg(key).query(&mut promoted).unwrap();
    assert_eq!(seq, 501, "the replica had every acknowledged write");
    drop((any, promoted));

    drop(cluster);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "redis-server {pid} outlived its cluster"
        );
    }
}

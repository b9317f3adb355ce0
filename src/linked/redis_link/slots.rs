//! Where a key lives: its Redis Cluster hash slot, and which shard's master
//! owns each slot (the [`Topology`]). A single Redis is a topology of one
//! shard that owns every slot, so the link has one path for both. Not the
//! connections to the shards, nor what is sent on them.

use redis::{Connection, ErrorKind, RedisError, RedisResult, ServerErrorKind, Value};

/// How many hash slots a Redis Cluster has: a key's slot is CRC16 of its
/// hash tag modulo this.
pub(super) const SLOTS: usize = 16384;

/// CRC16 as Redis Cluster computes it (the XMODEM variant: polynomial
/// 0x1021, initial value 0, no reflection). Bitwise, not by table: a key
/// is a few dozen bytes, hashed once per script call.
pub(super) fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of `key` that decides its slot: what lies between the first
/// `{` and the next `}`, if that is not empty, else the whole key. So
/// `room:{lobby}:seq` and `room:{lobby}` share a slot.
pub(super) fn hash_tag(key: &str) -> &[u8] {
    let bytes = key.as_bytes();
    if let Some(open) = bytes.iter().position(|&b| b == b'{') {
        if let Some(len) = bytes[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &bytes[open + 1..open + 1 + len];
            }
        }
    }
    bytes
}

/// The hash slot of `key`, as `CLUSTER KEYSLOT` answers.
pub(super) fn slot(key: &str) -> usize {
    usize::from(crc16(hash_tag(key))) % SLOTS
}

/// A slot no master serves.
const NO_SHARD: u16 = u16::MAX;

/// Which shard owns each slot, and where each shard's master listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Topology {
    /// Each shard's master, `host:port`, in the order of their first slot.
    masters: Vec<String>,
    /// Per slot, the index of its shard in `masters`; [`NO_SHARD`] for
    /// a slot no master serves (a cluster that is down there).
    owners: Vec<u16>,
    /// Whether Redis said it is a cluster (sharded pub/sub, one slot per
    /// script call), or a single Redis.
    cluster: bool,
}

impl Topology {
    /// One Redis, at `addr`, owning every slot.
    pub(super) fn single(addr: &str) -> Topology {
        Topology {
            masters: vec![addr.to_owned()],
            owners: vec![0; SLOTS],
            cluster: false,
        }
    }

    /// Reads the reply of `CLUSTER SLOTS` (ranges, each `[start, end,
    /// [host, port, id, ...], replicas...]`). A master whose host is empty
    /// is on `asked_host`, the host the question went to (Redis says so
    /// when it does not know its own address). `None` if the reply is not
    /// of that shape.
    pub(super) fn from_cluster_slots(reply: &Value, asked_host: &str) -> Option<Topology> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut masters: Vec<String> = Vec::new();
        let mut owners = vec![NO_SHARD; SLOTS];
        let mut ranges: Vec<&Vec<Value>> = ranges
            .iter()
            .filter_map(|range| match range {
                Value::Array(parts) => Some(parts),
                _ => None,
            })
            .collect();
        ranges.sort_by_key(|parts| int(parts.first()));
        for parts in ranges {
            let start = usize::try_from(int(parts.first())?).ok()?;
            let end = usize::try_from(int(parts.get(1))?).ok()?;
            let Some(Value::Array(master)) = parts.get(2) else {
                return None;
            };
            let host = text(master.first())?;
            let host = if host.is_empty() || host == "?" {
                asked_host.to_owned()
            } else {
                host
            };
            let port = int(master.get(1))?;
            let addr = format!("{host}:{port}");
            let shard = match masters.iter().position(|known| *known == addr) {
                Some(shard) => shard,
                None => {
                    masters.push(addr);
                    masters.len() - 1
                }
            };
            let shard = u16::try_from(shard)
                .ok()
                .filter(|&shard| shard != NO_SHARD)?;
            for owner in owners.get_mut(start..=end)? {
                *owner = shard;
            }
        }
        if masters.is_empty() {
            return None;
        }
        Some(Topology {
            masters,
            owners,
            cluster: true,
        })
    }

    /// Asks the Redis behind `connection` (at `addr`, `host:port`): a
    /// single Redis is [`Topology::single`]; a cluster node answers with
    /// its cluster's slots (`CLUSTER SLOTS`: on every Redis Cluster, 3.0
    /// on; `CLUSTER SHARDS` says the same from 7.0 only).
    pub(super) fn read(connection: &mut Connection, addr: &str) -> RedisResult<Topology> {
        let info: String = redis::cmd("INFO").arg("cluster").query(connection)?;
        if !info
            .lines()
            .any(|line| line.trim_end() == "cluster_enabled:1")
        {
            return Ok(Topology::single(addr));
        }
        let reply: Value = redis::cmd("CLUSTER").arg("SLOTS").query(connection)?;
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        Topology::from_cluster_slots(&reply, host).ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Parse, "an unreadable CLUSTER SLOTS reply"))
        })
    }

    /// Whether this is a Redis Cluster.
    pub(super) fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// How many shards (masters) there are.
    pub(super) fn shards(&self) -> usize {
        self.masters.len()
    }

    /// The master of shard `shard`, `host:port`.
    pub(super) fn master(&self, shard: usize) -> &str {
        &self.masters[shard]
    }

    /// Every master's address, by shard.
    pub(super) fn masters(&self) -> &[String] {
        &self.masters
    }

    /// The shard of `key`; an error while no master serves its slot (a
    /// cluster that says it is down, to whoever sends it).
    pub(super) fn owner(&self, key: &str) -> RedisResult<usize> {
        self.shard_of(key).ok_or_else(|| {
            RedisError::from((
                ErrorKind::Server(ServerErrorKind::ClusterDown),
                "no master serves this key's slot",
            ))
        })
    }

    /// The shard that owns `key`'s slot, if one does.
    pub(super) fn shard_of(&self, key: &str) -> Option<usize> {
        let owner = self.owners[slot(key)];
        (owner != NO_SHARD).then_some(usize::from(owner))
    }

    /// The shard whose master carries the classic pub/sub (node channels,
    /// questions, moderation) on a cluster: the master of the server bans'
    /// slot. A cluster relays a classic `PUBLISH` to every node, but its
    /// count counts only the subscribers of the node that ran it, so every
    /// server subscribes and publishes on this one node, chosen the same way by all from the
    /// topology, and chosen again when a failover changes it. The bans' own
    /// update (set, then published, in one transaction) lands there too.
    /// Shard 0 while no master serves that slot, and on one Redis.
    pub(super) fn classic(&self) -> usize {
        self.shard_of(super::SERVER_BANS_KEY).unwrap_or(0)
    }

    /// Whether every slot has a master.
    pub(super) fn covers_every_slot(&self) -> bool {
        self.owners.iter().all(|&owner| owner != NO_SHARD)
    }
}

fn int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Int(n) => Some(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        _ => None,
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_the_xmodem_variant() {
        // The standard check value of CRC-16/XMODEM.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn slots_are_what_redis_cluster_says() {
        // Each as `CLUSTER KEYSLOT` answered on Redis 7.0.15.
        assert_eq!(slot("room:{lobby}"), 10294);
        assert_eq!(slot("room:{lobby}:seq"), 10294);
        assert_eq!(slot("name:{alice}"), 749);
        assert_eq!(slot("name:{bob}"), 8955);
        assert_eq!(slot("room:{room2}"), 2052);
    }

    #[test]
    fn the_hash_tag_is_the_first_non_empty_braces() {
        assert_eq!(hash_tag("room:{lobby}:seq"), b"lobby");
        assert_eq!(hash_tag("a{b}{c}"), b"b");
        assert_eq!(hash_tag("a{}{c}"), b"a{}{c}");
        assert_eq!(hash_tag("a{b"), b"a{b");
        assert_eq!(hash_tag("plain"), b"plain");
        assert_eq!(slot("x{lobby}y"), slot("room:{lobby}"));
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn range(start: i64, end: i64, host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(start),
            Value::Int(end),
            Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]),
            Value::Array(vec![bulk(host), Value::Int(port + 3), bulk("replica")]),
        ])
    }

    #[test]
    fn a_cluster_is_read_from_its_slots() {
        let reply = Value::Array(vec![
            range(5461, 10922, "127.0.0.1", 7302),
            range(0, 5460, "127.0.0.1", 7301),
            range(10923, 16383, "", 7303),
        ]);
        let topology = Topology::from_cluster_slots(&reply, "10.0.0.9").unwrap();
        assert!(topology.is_cluster());
        assert!(topology.covers_every_slot());
        assert_eq!(topology.shards(), 3);
        let master = |key| topology.master(topology.shard_of(key).unwrap());
        assert_eq!(master("room:{lobby}"), "127.0.0.1:7302");
        assert_eq!(master("name:{alice}"), "127.0.0.1:7301");
        // An empty host: the one that was asked.
        let high = (0..)
            .map(|n| format!("room:{{r{n}}}"))
            .find(|key| slot(key) > 10922)
            .unwrap();
        assert_eq!(master(&high), "10.0.0.9:7303");
    }

    #[test]
    fn slots_no_master_serves_are_known_as_such() {
        let reply = Value::Array(vec![range(0, 5460, "127.0.0.1", 7301)]);
        let topology = Topology::from_cluster_slots(&reply, "127.0.0.1").unwrap();
        assert!(!topology.covers_every_slot());
        assert_eq!(topology.shard_of("room:{lobby}"), None);
        assert_eq!(topology.shard_of("name:{alice}"), Some(0));
        assert_eq!(Topology::from_cluster_slots(&Value::Nil, "h"), None);
        assert_eq!(
            Topology::from_cluster_slots(&Value::Array(vec![]), "h"),
            None
        );
    }

    #[test]
    fn one_redis_owns_every_slot() {
        let topology = Topology::single("127.0.0.1:6379");
        assert!(!topology.is_cluster());
        assert_eq!(topology.shards(), 1);
        assert_eq!(topology.shard_of("room:{lobby}"), Some(0));
        assert_eq!(topology.master(0), "127.0.0.1:6379");
    }
}

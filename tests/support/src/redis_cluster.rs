//! A Redis Cluster of a test's own: six `redis-server` processes on free
//! loopback ports, three masters with a replica each, joined by hand over
//! plain connections (no redis-cli), broken by killing or freezing a
//! master's process and stopped by process id. It sets the cluster up and reads it; routing
//! the chat's keys over it is the server's business, not this file's.

use std::collections::HashSet;
use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::TempDir;

/// The longest the cluster may take to form, to promote a replica, or to
/// stop. Both take about two seconds here: a master that has just started
/// reports the cluster ok no sooner than 2 s after its start (Redis'
/// fixed `CLUSTER_WRITABLE_DELAY`); joining and attaching the replicas
/// take 0.7 s of that.
const TIMEOUT: Duration = Duration::from_secs(20);

/// How long a node may go unanswered before the others count it as
/// failed: 1 s, so that a killed master's replica takes over within about
/// two seconds. Redis' default, 15 s, would make a failover test slow.
const NODE_TIMEOUT_MS: &str = "1000";

/// The number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The slots each master owns, in shard order: the split
/// `redis-cli --cluster create` makes for three masters.
pub const SHARD_SLOTS: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

/// One process of the cluster, as a test sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its process id: what [`cpu_ns`] reads and what a kill targets.
    pub pid: u32,
    /// Its client port (its cluster bus is on `port + 10000`).
    pub port: u16,
}

/// One redis-server of the cluster. Node `s` (0..3) starts as shard `s`'s
/// master, node `s + 3` as its replica.
struct Node {
    /// None once the process is killed and reaped.
    child: Option<Child>,
    /// Stopped by SIGSTOP and not yet given SIGCONT: it holds its
    /// connections open and answers nothing. Dropping the cluster kills
    /// it all the same (SIGKILL ends a stopped process too).
    frozen: bool,
    port: u16,
    /// Its cluster node id (`CLUSTER MYID`).
    id: String,
}

/// Six redis-server processes in cluster mode on loopback, in a directory
/// of their own: three masters owning [`SHARD_SLOTS`], one replica each.
/// Every process is stopped by its id when the value is dropped, and
/// checked gone.
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// Per shard, the index in `nodes` of its master now.
    masters: [usize; 3],
    /// Logs and node configuration files.
    dir: TempDir,
    /// How long [`RedisCluster::start`] took, from nothing to a cluster
    /// whose replicas are all attached.
    pub started_in: Duration,
}

impl RedisCluster {
    /// Starts the six processes, gives each master its slots, joins them
    /// and attaches the replicas; returns once every node reports
    /// `cluster_state:ok` and sees the three masters and three replicas,
    /// and every replica's link to its master is up. (`cluster_state:ok`
    /// alone comes before the replicas are attached: a master killed then
    /// would have no replica to take over.)
    pub fn start() -> RedisCluster {
        RedisCluster::start_on(node_ports())
    }

    /// [`RedisCluster::start`] on these six ports.
    fn start_on(ports: Vec<u16>) -> RedisCluster {
        let began = Instant::now();
        // Each process is the cluster's from the moment it starts, so a
        // panic anywhere in the start-up drops it and stops every one.
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            masters: [0, 1, 2],
            dir: TempDir::new(),
            started_in: Duration::ZERO,
        };
        for port in ports {
            let child = spawn(cluster.dir.path(), port);
            cluster.nodes.push(Node {
                child: Some(child),
                frozen: false,
                port,
                id: String::new(),
            });
        }
        for index in 0..cluster.nodes.len() {
            let mut connection = cluster.wait_answers(index);
            cluster.nodes[index].id = redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut connection)
                .expect("CLUSTER MYID");
        }
        for (shard, &(first, last)) in SHARD_SLOTS.iter().enumerate() {
            let mut master = cluster.connection(cluster.nodes[shard].port);
            // Distinct epochs from the start, as redis-cli gives them:
            // otherwise the masters first settle a collision of epoch 0.
            let _: () = redis::cmd("CLUSTER")
                .arg("SET-CONFIG-EPOCH")
                .arg(shard + 1)
                .query(&mut master)
                .expect("CLUSTER SET-CONFIG-EPOCH");
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .query(&mut master)
                .expect("CLUSTER ADDSLOTSRANGE");
        }
        let mut first = cluster.connection(cluster.nodes[0].port);
        for node in &cluster.nodes[1..] {
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.port)
                .query(&mut first)
                .expect("CLUSTER MEET");
        }
        for shard in 0..3 {
            cluster.attach_replica(shard + 3, shard);
        }
        cluster.wait_settled("the cluster to form");
        cluster.started_in = began.elapsed();
        cluster
    }

    /// Where a client reaches the cluster: the first node still running,
    /// as a URL for `--redis`. Node 0 (shard 0's first master) while it
    /// lives.
    pub fn url(&self) -> String {
        let node = self
            .nodes
            .iter()
            .find(|node| node.child.is_some())
            .expect("a node still running");
        format!("redis://127.0.0.1:{}", node.port)
    }

    /// Each shard's master now, in shard order (shard `s` owns
    /// `SHARD_SLOTS[s]`).
    pub fn masters(&self) -> [Member; 3] {
        self.masters.map(|index| self.member(index))
    }

    /// Shard `shard`'s replica, if it still has one running (after a
    /// failover the shard's only node is the promoted replica; a frozen
    /// node is nobody's replica until thawed).
    pub fn replica(&self, shard: usize) -> Option<Member> {
        let replica = self.other_of(shard);
        let node = &self.nodes[replica];
        (node.child.is_some() && !node.frozen).then(|| self.member(replica))
    }

    /// Kills shard `shard`'s master by its process id (SIGKILL: a crash,
    /// so what it had not yet sent its replica is lost), then waits until
    /// its replica is promoted and every node still running agrees, and
    /// the cluster is ok again. Returns the time from the kill to then.
    pub fn kill_master(&mut self, shard: usize) -> Duration {
        let victim = self.masters[shard];
        let heir = self.other_of(shard);
        assert!(
            self.nodes[heir].child.is_some(),
            "shard {shard} has no replica left to promote"
        );
        let killed = Instant::now();
        stop(&mut self.nodes[victim]);
        self.masters[shard] = heir;
        self.wait_settled(&format!("shard {shard}'s replica to take over"));
        killed.elapsed()
    }

    /// Freezes shard `shard`'s master by its process id (SIGSTOP: a hung
    /// machine, whose connections stay open and silent). It stays the
    /// shard's master in [`RedisCluster::masters`] until
    /// [`RedisCluster::wait_taken_over`]. The frozen process is killed with
    /// the rest when the cluster is dropped, a panic included, unless
    /// [`RedisCluster::thaw`] lets it run again first.
    pub fn freeze_master(&mut self, shard: usize) {
        let victim = self.masters[shard];
        assert!(
            !self.nodes[victim].frozen,
            "shard {shard}'s master is frozen already"
        );
        signal(&self.nodes[victim], "-STOP");
        self.nodes[victim].frozen = true;
    }

    /// Keeps shard `shard`'s replica from taking over (`held`), or lets it
    /// again: `cluster-replica-no-failover`, set on the replica.
    pub fn hold_failover(&self, shard: usize, held: bool) {
        let replica = self.replica(shard).expect("a replica running");
        let mut connection = self.connection(replica.port);
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("cluster-replica-no-failover")
            .arg(if held { "yes" } else { "no" })
            .query(&mut connection)
            .expect("CONFIG SET cluster-replica-no-failover");
    }

    /// Waits until shard `shard`'s replica has taken over from its frozen
    /// master and every node still answering agrees, and the cluster is ok
    /// again.
    pub fn wait_taken_over(&mut self, shard: usize) {
        let victim = self.masters[shard];
        assert!(
            self.nodes[victim].frozen,
            "shard {shard}'s master is not frozen"
        );
        self.masters[shard] = self.other_of(shard);
        self.wait_settled(&format!("shard {shard}'s replica to take over"));
    }

    /// Lets shard `shard`'s frozen node run again (SIGCONT) and waits until
    /// it has rejoined as the replica of the master that took over from it.
    pub fn thaw(&mut self, shard: usize) {
        let node = self.other_of(shard);
        assert!(self.nodes[node].frozen, "shard {shard} has no frozen node");
        signal(&self.nodes[node], "-CONT");
        self.nodes[node].frozen = false;
        self.wait_settled(&format!("shard {shard}'s thawed node to become a replica"));
    }

    /// The shard whose master owns `slot`.
    pub fn shard_of(slot: u16) -> usize {
        SHARD_SLOTS
            .iter()
            .position(|&(first, last)| (first..=last).contains(&slot))
            .expect("a slot below 16384")
    }

    /// A plain connection to the node on `port`, for what a test asks a
    /// node directly (it follows no redirection).
    pub fn connection(&self, port: u16) -> redis::Connection {
        connect(port).unwrap_or_else(|err| panic!("connecting to node {port}: {err}"))
    }

    /// The node on `port`'s log so far, for a failure's message.
    pub fn log(&self, port: u16) -> String {
        fs::read_to_string(log_path(self.dir.path(), port)).unwrap_or_default()
    }

    fn member(&self, index: usize) -> Member {
        let node = &self.nodes[index];
        Member {
            pid: node.child.as_ref().expect("a node still running").id(),
            port: node.port,
        }
    }

    /// The node of `shard` that is not its master now.
    fn other_of(&self, shard: usize) -> usize {
        if self.masters[shard] == shard {
            shard + 3
        } else {
            shard
        }
    }

    /// Makes node `replica` a replica of shard `shard`'s master, once it
    /// has heard of that master (the MEETs spread by gossip).
    fn attach_replica(&self, replica: usize, shard: usize) {
        let master_id = &self.nodes[self.masters[shard]].id;
        let mut connection = self.connection(self.nodes[replica].port);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let attached: redis::RedisResult<()> = redis::cmd("CLUSTER")
                .arg("REPLICATE")
                .arg(master_id)
                .query(&mut connection);
            match attached {
                Ok(()) => return,
                // "Unknown node" until the gossip brings the master.
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Err(err) => panic!("CLUSTER REPLICATE on node {replica}: {err}"),
            }
        }
    }

    /// Waits until [`RedisCluster::unsettled`] has nothing to say; fails
    /// the test with what was still wrong, and the logs, if that takes
    /// longer than the timeout.
    fn wait_settled(&self, what: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let Some(wrong) = self.unsettled() else {
                return;
            };
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|node| format!("--- node {}:\n{}", node.port, self.log(node.port)))
                    .collect();
                panic!(
                    "waited {TIMEOUT:?} for {what}: {wrong}\n{}",
                    logs.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// What still keeps the cluster from the shape it should have, if
    /// anything: every running node must report `cluster_state:ok`, see
    /// each shard's master as a master in good standing, and see each
    /// running replica as the replica of its shard's master; and each
    /// running replica's link to that master must be up.
    fn unsettled(&self) -> Option<String> {
        // A frozen node answers nothing; its peers have counted it failed.
        let running = self
            .nodes
            .iter()
            .filter(|node| node.child.is_some() && !node.frozen);
        for node in running {
            let port = node.port;
            let mut connection = match connect(port) {
                Ok(connection) => connection,
                Err(err) => return Some(format!("node {port} unreachable: {err}")),
            };
            let info: String = match redis::cmd("CLUSTER").arg("INFO").query(&mut connection) {
                Ok(info) => info,
                Err(err) => return Some(format!("node {port}: CLUSTER INFO: {err}")),
            };
            if !info.lines().any(|line| line.trim() == "cluster_state:ok") {
                return Some(format!("node {port} says the cluster is not ok"));
            }
            let table: String = match redis::cmd("CLUSTER").arg("NODES").query(&mut connection) {
                Ok(table) => table,
                Err(err) => return Some(format!("node {port}: CLUSTER NODES: {err}")),
            };
            for shard in 0..3 {
                let master = &self.nodes[self.masters[shard]];
                let flags = flags_of(&table, &master.id).unwrap_or_default();
                if !flags.contains(&"master") || flags.iter().any(|flag| flag.starts_with("fail")) {
                    return Some(format!(
                        "node {port} does not see {} as shard {shard}'s master: {flags:?}",
                        master.port
                    ));
                }
                let replica = &self.nodes[self.other_of(shard)];
                if replica.child.is_none() || replica.frozen {
                    continue;
                }
                let line = table
                    .lines()
                    .find(|line| line.starts_with(replica.id.as_str()));
                let fields: Vec<&str> = line.unwrap_or_default().split(' ').collect();
                let replica_of = fields.get(3).copied();
                let is_replica = fields
                    .get(2)
                    .is_some_and(|flags| flags.split(',').any(|flag| flag == "slave"));
                if !is_replica || replica_of != Some(master.id.as_str()) {
                    return Some(format!(
                        "node {port} does not see {} as {}'s replica yet",
                        replica.port, master.port
                    ));
                }
                if replica.port == port {
                    let info: String = redis::cmd("INFO")
                        .arg("replication")
                        .query(&mut connection)
                        .unwrap_or_default();
                    let up = info.lines().any(|l| l.trim() == "master_link_status:up");
                    let of_master = info
                        .lines()
                        .any(|l| l.trim() == format!("master_port:{}", master.port));
                    if !up || !of_master {
                        return Some(format!(
                            "replica {port}'s link to {} is not up",
                            master.port
                        ));
                    }
                }
            }
        }
        None
    }

    /// Waits until the freshly started node answers PING; a node that
    /// ended instead (its port taken since it was chosen) fails the test
    /// with its log.
    fn wait_answers(&mut self, index: usize) -> redis::Connection {
        let port = self.nodes[index].port;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(mut connection) = connect(port) {
                if redis::cmd("PING").query::<String>(&mut connection).is_ok() {
                    return connection;
                }
            }
            let ended = self.nodes[index].child.as_mut().map(Child::try_wait);
            if let Some(Ok(Some(status))) = ended {
                panic!(
                    "redis-server on {port} ended ({status}) before answering:\n{}",
                    self.log(port)
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} never answered"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut() {
            stop(node);
        }
    }
}

/// Sends the node's process `signal` (`kill`'s spelling) by its id.
fn signal(node: &Node, signal: &str) {
    let pid = node.child.as_ref().expect("a node still running").id();
    let sent = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap_or_else(|err| panic!("kill {signal} {pid}: {err}"));
    assert!(sent.success(), "kill {signal} {pid}: {sent}");
}

/// Kills the node's process by its id and waits until it is gone (reaped),
/// within the timeout; a process that outlives it fails the test (or, if
/// the test is failing already, is reported).
fn stop(node: &mut Node) {
    let Some(mut child) = node.child.take() else {
        return;
    };
    let pid = child.id();
    node.frozen = false;
    // SIGKILL: no data to save, and a crash is what a failover test wants.
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let message = format!("redis-server {pid} (port {}) still running", node.port);
    if thread::panicking() {
        eprintln!("{message}");
    } else {
        panic!("{message}");
    }
}

/// Starts one cluster node on `port`, its log and node file in `dir`.
fn spawn(dir: &Path, port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(log_path(dir, port))
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        .args(["--cluster-node-timeout", NODE_TIMEOUT_MS])
        // A replica takes over however long ago it last heard its master:
        // on a loaded test machine the default could leave a shard down.
        .args(["--cluster-replica-validity-factor", "0"])
        // A replica's first copy starts at once (the default waits 5 s
        // for more replicas to share it).
        .args(["--repl-diskless-sync-delay", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)")
}

fn log_path(dir: &Path, port: u16) -> std::path::PathBuf {
    dir.join(format!("redis-{port}.log"))
}

/// A connection to the node on `port` that gives up within a second.
fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let connection = client.get_connection_with_timeout(Duration::from_secs(1))?;
    connection.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(connection)
}

/// The flags of node `id` in a `CLUSTER NODES` table (`myself,master`,
/// `slave`, `master,fail`, ...).
fn flags_of<'a>(table: &'a str, id: &str) -> Option<Vec<&'a str>> {
    let line = table.lines().find(|line| line.starts_with(id))?;
    Some(line.split(' ').nth(2)?.split(',').collect())
}

/// Six distinct loopback ports nobody listens on, each with its cluster
/// bus port (`port + 10000`) free too. Each is held while the next are
/// chosen, so the six differ; all are let go before the nodes start.
fn node_ports() -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = HashSet::new();
    for _ in 0..200 {
        if ports.len() == 6 {
            break;
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        let Some(bus) = port.checked_add(10000) else {
            continue;
        };
        if ports.contains(&bus) || ports.iter().any(|&p| p + 10000 == port) {
            continue;
        }
        let Ok(bus_listener) = TcpListener::bind(("127.0.0.1", bus)) else {
            continue;
        };
        ports.insert(port);
        held.push((listener, bus_listener));
    }
    assert_eq!(ports.len(), 6, "no six free port pairs on loopback");
    held.iter()
        .map(|(listener, _)| listener.local_addr().expect("its address").port())
        .collect()
}

/// The time process `pid` has spent on a CPU so far, in nanoseconds: the
/// sum over its threads of `/proc/PID/task/*/schedstat`'s first field.
/// Threads that ended are not counted: Redis' threads live as long as it.
pub fn cpu_ns(pid: u32) -> u64 {
    let tasks = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|err| panic!("the threads of process {pid}: {err}"));
    tasks
        .filter_map(|task| {
            let schedstat = fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            schedstat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// The hash slot of `key`, as Redis Cluster computes it: CRC16 (XMODEM)
/// of the key's hash tag (what lies between its first `{` and the next
/// `}`, if that is not empty) or else of the whole key, modulo 16384.
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tag = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16_xmodem(tag.unwrap_or(bytes)) % SLOTS
}

/// CRC16 with polynomial 0x1021, initial value 0, no reflection.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
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

#[cfg(test)]
mod tests {
    use std::net::TcpStream;
    use std::panic::{self, AssertUnwindSafe};

    use super::*;

    /// A node that cannot start (its port taken) fails the start-up after
    /// the five others answered; none of those five is left running.
    #[test]
    fn a_failed_start_up_stops_every_process_started() {
        let ports = node_ports();
        let _taken = TcpListener::bind(("127.0.0.1", ports[5])).expect("the sixth port");
        let started =
            panic::catch_unwind(AssertUnwindSafe(|| RedisCluster::start_on(ports.clone())));
        assert!(started.is_err(), "a cluster started without its sixth node");
        for &port in &ports[..5] {
            assert!(
                TcpStream::connect(("127.0.0.1", port)).is_err(),
                "node {port} still answers after the failed start-up"
            );
        }
    }
}

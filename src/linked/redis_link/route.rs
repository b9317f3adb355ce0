//! Commands to the Redis that holds their key: a [`Router`] keeps one
//! connection per master and sends each command (or pipeline) to the
//! master of its first key's slot, behind the client library's
//! `ConnectionLike`, so the link's code asks one value wherever a key
//! lives. On one Redis it is that Redis' one connection and nothing more.
//! Not the subscriptions (`subscriber.rs` and `shards.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{
    Connection, ConnectionLike, ErrorKind, RedisError, RedisResult, ServerErrorKind, Value,
};

use super::connect::Target;
use super::slots::Topology;

/// The least time between two readings of the topology: a burst of
/// redirections during a failover asks the cluster once, not per command.
const READ_AGAIN_AFTER: Duration = Duration::from_millis(200);

/// Commands that name no key: sent to the classic pub/sub's master
/// ([`Topology::classic`]: a `PUBLISH` counts only the subscribers of the
/// node that runs it), `SCRIPT` to all.
const KEYLESS: [&[u8]; 13] = [
    b"PUBLISH", b"PING", b"INFO", b"SCRIPT", b"CLUSTER", b"MULTI", b"EXEC", b"CLIENT", b"AUTH",
    b"SELECT", b"HELLO", b"WAIT", b"ASKING",
];

/// One connection per master of the topology, opened when first needed.
pub(super) struct Router {
    target: Arc<Target>,
    topology: Topology,
    open: Vec<Option<Connection>>,
    /// Every node the topology named, masters first: where to ask again
    /// when the URL's own node is gone.
    seeds: Vec<String>,
    read_at: Option<Instant>,
}

impl Router {
    /// Routes over `topology`; `first`, if given, is a connection to the
    /// URL's node, used for its shard.
    pub(super) fn new(
        target: Arc<Target>,
        topology: Topology,
        first: Option<Connection>,
    ) -> Router {
        let mut open: Vec<Option<Connection>> = (0..topology.shards()).map(|_| None).collect();
        if let Some(first) = first {
            let own = (0..topology.shards()).find(|&shard| topology.master(shard) == target.addr);
            if let Some(shard) = own {
                open[shard] = Some(first);
            }
        }
        let seeds = topology.masters().to_vec();
        Router {
            target,
            topology,
            open,
            seeds,
            read_at: None,
        }
    }

    /// The topology routed over.
    pub(super) fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Forgets every connection: the next command opens new ones.
    pub(super) fn reset(&mut self) {
        for open in &mut self.open {
            *open = None;
        }
    }

    /// Reads the cluster's topology again ([`Router::ask_topology`]), at
    /// most every [`READ_AGAIN_AFTER`] (`now`: at
    /// once). True if it changed. One Redis has nothing to read.
    pub(super) fn read_again(&mut self, now: bool) -> bool {
        if !self.topology.is_cluster() {
            return false;
        }
        if !now
            && self
                .read_at
                .is_some_and(|at| at.elapsed() < READ_AGAIN_AFTER)
        {
            return false;
        }
        self.read_at = Some(Instant::now());
        let Some(topology) = self.ask_topology() else {
            return false;
        };
        if !topology.is_cluster() || topology == self.topology {
            return false;
        }
        log::info!(
            "redis {}: the cluster's masters are now {}",
            self.target.addr,
            topology.masters().join(", ")
        );
        for master in topology.masters() {
            if !self.seeds.contains(master) {
                self.seeds.push(master.to_owned());
            }
        }
        self.open = (0..topology.shards()).map(|_| None).collect();
        self.topology = topology;
        true
    }

    /// The topology as some node tells it now: first over a connection
    /// already open (no connect, which to a host that is gone costs the
    /// whole connect timeout), then the other nodes the topology named,
    /// those whose connection just failed after them, the URL's own node
    /// last. A connection that fails is dropped.
    fn ask_topology(&mut self) -> Option<Topology> {
        let mut failed = Vec::new();
        for shard in 0..self.open.len() {
            let Some(connection) = self.open[shard].as_mut() else {
                continue;
            };
            let master = self.topology.master(shard);
            match Topology::read(connection, master) {
                Ok(topology) => return Some(topology),
                Err(_) => {
                    failed.push(master.to_owned());
                    self.open[shard] = None;
                }
            }
        }
        // Those whose connection just failed are likely gone: after the
        // others, with the URL's.
        let (mut asked, later): (Vec<String>, Vec<String>) = self
            .seeds
            .iter()
            .filter(|seed| **seed != self.target.addr)
            .cloned()
            .partition(|seed| !failed.contains(seed));
        asked.extend(later);
        asked.push(self.target.addr.clone());
        asked.into_iter().find_map(|node| {
            let mut connection = self.target.connect_to(&node).ok()?;
            Topology::read(&mut connection, &node).ok()
        })
    }

    /// The connection to shard `shard`'s master, opened if need be. A
    /// master that cannot be reached may have failed over: the cluster is
    /// read again (at most every [`READ_AGAIN_AFTER`]), so that the next
    /// try goes to its replica once promoted.
    pub(super) fn shard(&mut self, shard: usize) -> RedisResult<&mut Connection> {
        // Read again meanwhile, with fewer masters than the caller saw.
        if shard >= self.open.len() {
            return Err(RedisError::from((
                ErrorKind::Server(ServerErrorKind::TryAgain),
                "the cluster's masters changed",
            )));
        }
        let connection = match self.open[shard].take() {
            Some(open) => open,
            None => match self.target.connect_to(self.topology.master(shard)) {
                Ok(connection) => connection,
                Err(error) => {
                    self.read_again(false);
                    return Err(error);
                }
            },
        };
        Ok(self.open[shard].insert(connection))
    }

    /// The shard of `key`; an error while no master serves its slot.
    pub(super) fn shard_of(&self, key: &str) -> RedisResult<usize> {
        self.topology.owner(key)
    }

    /// Where packed commands go: the shard of the first that names a
    /// key, the classic pub/sub's shard if none does.
    fn route(&self, packed: &[u8]) -> RedisResult<usize> {
        if !self.topology.is_cluster() {
            return Ok(0);
        }
        match first_key(packed) {
            Some(key) => self.shard_of(&String::from_utf8_lossy(key)),
            None => Ok(self.topology.classic()),
        }
    }

    /// A failed exchange with shard `shard`: its connection goes, and a
    /// cluster is read again (its master may have failed over).
    fn failed(&mut self, shard: usize, error: &RedisError) {
        if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() {
            self.open[shard] = None;
        }
        self.read_again(false);
    }

    /// A reply that says the key lives elsewhere: the topology is read
    /// again at once.
    fn redirected(&mut self, value: &Value) -> bool {
        let moved = matches!(value, Value::ServerError(error)
            if matches!(error.kind(), Some(ServerErrorKind::Moved | ServerErrorKind::ClusterDown)));
        if moved {
            self.read_again(true);
        }
        moved
    }

    /// Sends one command to `node` after `ASKING` (a slot half moved:
    /// the key is there for this command only), over a connection of
    /// `there` to it or a new one kept there for the next.
    fn ask_there(
        &self,
        node: &str,
        packed: &[u8],
        there: &mut Vec<(String, Connection)>,
    ) -> RedisResult<Value> {
        let index = match there.iter().position(|(open, _)| open == node) {
            Some(index) => index,
            None => {
                there.push((node.to_owned(), self.target.connect_to(node)?));
                there.len() - 1
            }
        };
        let connection = &mut there[index].1;
        redis::cmd("ASKING").exec(connection)?;
        connection.req_packed_command(packed)
    }

    fn send_one(&mut self, shard: usize, packed: &[u8]) -> RedisResult<Value> {
        let sent = self.shard(shard)?.req_packed_command(packed);
        if let Err(error) = &sent {
            self.failed(shard, error);
        }
        sent
    }
}

impl ConnectionLike for Router {
    fn req_packed_command(&mut self, packed: &[u8]) -> RedisResult<Value> {
        if !self.topology.is_cluster() {
            return self.send_one(0, packed);
        }
        if command_name(packed).is_some_and(|name| name.eq_ignore_ascii_case(b"SCRIPT")) {
            // Scripts are loaded on every master: any may run them.
            let mut last = Value::Nil;
            for shard in 0..self.topology.shards() {
                last = self.send_one(shard, packed)?;
            }
            return Ok(last);
        }
        let shard = self.route(packed)?;
        let reply = self.send_one(shard, packed)?;
        if let Some(node) = asked_to(&reply) {
            let node = node.to_owned();
            return self.ask_there(&node, packed, &mut Vec::new());
        }
        if self.redirected(&reply) {
            let shard = self.route(packed)?;
            return self.send_one(shard, packed);
        }
        Ok(reply)
    }

    fn req_packed_commands(
        &mut self,
        packed: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let shard = self.route(packed)?;
        let replies = self
            .shard(shard)?
            .req_packed_commands(packed, offset, count);
        let mut values = match replies {
            Err(error) => {
                self.failed(shard, &error);
                return Err(error);
            }
            Ok(values) => values,
        };
        // A command of a slot half moved (`ASK`) is sent again alone, to
        // the node named: each is safe to send twice (a touch, a claim or
        // a release is the same done again, a room's line carries its
        // count, which the script takes once). Not inside a transaction
        // (`offset` past its `MULTI`), which Redis refuses whole instead.
        if offset == 0 && values.iter().any(|value| asked_to(value).is_some()) {
            let commands = commands(packed);
            let mut there = Vec::new();
            for (value, command) in values.iter_mut().zip(commands) {
                if let Some(node) = asked_to(value).map(str::to_owned) {
                    // Left as it was if the node cannot be asked: the
                    // caller's pipeline fails on it and is sent again.
                    if let Ok(answer) = self.ask_there(&node, command, &mut there) {
                        *value = answer;
                    }
                }
            }
        }
        // Any other refusal fails the caller's pipeline, which is sent
        // again whole, over the topology as it is now.
        if let Some(value) = values
            .iter()
            .find(|value| matches!(value, Value::ServerError(_)))
        {
            self.redirected(value);
        }
        Ok(values)
    }

    fn get_db(&self) -> i64 {
        0
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").exec(self).is_ok()
    }

    fn is_open(&self) -> bool {
        true
    }
}

/// The words of the first command in `packed` (RESP arrays of bulk
/// strings, as the client library writes them), up to `most` of them.
fn first_words(packed: &[u8], most: usize) -> Vec<&[u8]> {
    let mut words = Vec::new();
    let mut rest = packed;
    let Some(count) = header(&mut rest, b'*') else {
        return words;
    };
    for _ in 0..count.min(most) {
        let Some(len) = header(&mut rest, b'$') else {
            break;
        };
        if rest.len() < len + 2 {
            break;
        }
        words.push(&rest[..len]);
        rest = &rest[len + 2..];
    }
    words
}

/// Reads `<kind><number>\r\n` off the front of `rest`.
fn header(rest: &mut &[u8], kind: u8) -> Option<usize> {
    let (&first, tail) = rest.split_first()?;
    if first != kind {
        return None;
    }
    let end = tail.windows(2).position(|pair| pair == b"\r\n")?;
    let number = std::str::from_utf8(&tail[..end]).ok()?.parse().ok()?;
    *rest = &tail[end + 2..];
    Some(number)
}

/// The node an `ASK` reply sends the command to, `host:port`.
fn asked_to(value: &Value) -> Option<&str> {
    match value {
        Value::ServerError(error) if error.kind() == Some(ServerErrorKind::Ask) => error
            .details()
            .and_then(|details| details.split(' ').nth(1)),
        _ => None,
    }
}

/// Each command of a pipeline, as packed.
fn commands(packed: &[u8]) -> Vec<&[u8]> {
    let mut commands = Vec::new();
    let mut rest = packed;
    while let Some(len) = command_len(rest).filter(|&len| len > 0) {
        commands.push(&rest[..len]);
        rest = &rest[len..];
    }
    commands
}

fn command_name(packed: &[u8]) -> Option<&[u8]> {
    first_words(packed, 1).first().copied()
}

/// The first key named in `packed`, a command or a pipeline: the first
/// command's, or, for one that names none (`MULTI`), the next one's.
fn first_key(packed: &[u8]) -> Option<&[u8]> {
    let mut rest = packed;
    while !rest.is_empty() {
        let words = first_words(rest, 4);
        let name = *words.first()?;
        let key = if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL") {
            let keys: usize = std::str::from_utf8(words.get(2)?).ok()?.parse().ok()?;
            if keys > 0 {
                words.get(3).copied()
            } else {
                None
            }
        } else if KEYLESS
            .iter()
            .any(|keyless| name.eq_ignore_ascii_case(keyless))
        {
            None
        } else {
            words.get(1).copied()
        };
        if key.is_some() {
            return key;
        }
        rest = &rest[command_len(rest)?..];
    }
    None
}

/// How many bytes the first command of `packed` takes.
fn command_len(packed: &[u8]) -> Option<usize> {
    let mut rest = packed;
    let count = header(&mut rest, b'*')?;
    for _ in 0..count {
        let len = header(&mut rest, b'$')?;
        rest = rest.get(len + 2..)?;
    }
    Some(packed.len() - rest.len())
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, ErrorKind as IoKind, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;

    use super::super::LinkSettings;
    use super::*;

    /// Reads one command (a RESP array of bulk strings) off `reader`:
    /// its words, or None at the end of the stream.
    fn read_command(reader: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let count: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
        let mut words = Vec::new();
        for _ in 0..count {
            line.clear();
            reader.read_line(&mut line).ok()?;
            line.clear();
            reader.read_line(&mut line).ok()?;
            words.push(line.trim_end().to_owned());
        }
        Some(words)
    }

    /// A node for one connection, answering each command with `answer`'s
    /// reply (RESP), and `+OK` where it has none (the client's set-up).
    fn fake_node(
        listener: TcpListener,
        answer: impl Fn(&str) -> Option<String> + Send + 'static,
    ) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            // Ends by itself should the client never close.
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut writer = stream.try_clone().expect("a second handle");
            let mut reader = BufReader::new(stream);
            while let Some(words) = read_command(&mut reader) {
                let command = words.join(" ").to_ascii_uppercase();
                let reply = answer(&command).unwrap_or_else(|| "+OK\r\n".to_owned());
                if writer.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        })
    }

    /// A node of a cluster of one master, `127.0.0.1:port` owning every
    /// slot: it answers `INFO` and `CLUSTER SLOTS`.
    fn one_master_node(listener: TcpListener, port: u16) -> thread::JoinHandle<()> {
        fake_node(listener, move |command| {
            if command.starts_with("INFO") {
                Some("$17\r\ncluster_enabled:1\r\n".to_owned())
            } else if command == "CLUSTER SLOTS" {
                Some(format!(
                    "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:{port}\r\n"
                ))
            } else {
                None
            }
        })
    }

    /// A topology of masters on loopback: each `(first, last, port)`.
    fn topology(ranges: &[(i64, i64, u16)]) -> Topology {
        let ranges = ranges
            .iter()
            .map(|&(first, last, port)| {
                Value::Array(vec![
                    Value::Int(first),
                    Value::Int(last),
                    Value::Array(vec![
                        Value::BulkString(b"127.0.0.1".to_vec()),
                        Value::Int(i64::from(port)),
                    ]),
                ])
            })
            .collect();
        Topology::from_cluster_slots(&Value::Array(ranges), "127.0.0.1").expect("a topology")
    }

    fn bind() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = listener.local_addr().expect("its address").port();
        (listener, port)
    }

    fn quick() -> LinkSettings {
        LinkSettings {
            reply_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            ..LinkSettings::default()
        }
    }

    /// Commands naming no key, `PUBLISH` first, go to the master of the
    /// server bans' slot (7104, shard 1 here), not to the first master.
    #[test]
    fn keyless_commands_go_to_the_classic_node() {
        let target = Arc::new(Target::new("redis://127.0.0.1:1", &quick()).expect("a target"));
        let topology = topology(&[(0, 5460, 1), (5461, 10922, 2), (10923, 16383, 3)]);
        assert_eq!(topology.classic(), 1);
        let router = Router::new(target, topology, None);
        let publish = redis::cmd("PUBLISH")
            .arg("node:x")
            .arg("p a b c")
            .get_packed_command();
        assert_eq!(router.route(&publish).ok(), Some(1));
        // A key on another master than the classic node's, so that a key
        // taken for none would show.
        let get = redis::cmd("GET").arg("name:{b1}:a").get_packed_command();
        assert_ne!(router.shard_of("name:{b1}:a").ok(), Some(1));
        assert_eq!(router.route(&get).ok(), router.shard_of("name:{b1}:a").ok());
    }

    /// A pipeline's command that gets `ASK` is sent again alone, after
    /// `ASKING`, to the node named; the others' replies stay.
    #[test]
    fn a_pipeline_follows_ask_per_command() {
        let (here, here_port) = bind();
        let (there, there_port) = bind();
        let moving = fake_node(here, move |command| match command {
            "GET {MOVING}X" => Some(format!("-ASK 1 127.0.0.1:{there_port}\r\n")),
            "GET {STAYING}Y" => Some("$4\r\nhere\r\n".to_owned()),
            _ => None,
        });
        let asked = Arc::new(AtomicBool::new(false));
        let was_asked = Arc::clone(&asked);
        let importing = fake_node(there, move |command| match command {
            "ASKING" => {
                was_asked.store(true, Ordering::SeqCst);
                None
            }
            "GET {MOVING}X" if was_asked.load(Ordering::SeqCst) => {
                Some("$5\r\nthere\r\n".to_owned())
            }
            _ => Some("-MOVED 1 127.0.0.1:1\r\n".to_owned()),
        });
        let url = format!("redis://127.0.0.1:{here_port}");
        let target = Arc::new(Target::new(&url, &quick()).expect("a target"));
        let first = target.connect().expect("a connection to the node");
        let mut router = Router::new(target, topology(&[(0, 16383, here_port)]), Some(first));
        let mut pipe = redis::pipe();
        pipe.cmd("GET")
            .arg("{moving}x")
            .cmd("GET")
            .arg("{staying}y");
        let replies: Vec<String> = pipe.query(&mut router).expect("both replies");
        assert_eq!(replies, ["there", "here"]);
        assert!(asked.load(Ordering::SeqCst));
        drop(router);
        moving.join().expect("the first node's thread");
        importing.join().expect("the second node's thread");
    }

    /// The topology is read over the connection already open: the URL's
    /// node (here one that accepts and never answers, as a host gone
    /// behind a firewall costs a timeout) is not even connected to.
    #[test]
    fn the_topology_is_read_again_over_an_open_connection_first() {
        let (silent, silent_port) = bind();
        let (node, node_port) = bind();
        let serving = one_master_node(node, node_port);
        let settings = quick();
        let url = format!("redis://127.0.0.1:{silent_port}");
        let target = Arc::new(Target::new(&url, &settings).expect("a target"));
        // Two masters, the URL's node one of them; the node says it is
        // the only one now.
        let topology = topology(&[(0, 8191, node_port), (8192, 16383, silent_port)]);
        let mut router = Router::new(Arc::clone(&target), topology, None);
        router.open[0] = Some(
            target
                .connect_to(&format!("127.0.0.1:{node_port}"))
                .expect("a connection to the node"),
        );

        let began = Instant::now();
        assert!(router.read_again(true), "the topology did not change");
        assert_eq!(router.topology().shards(), 1);
        assert_eq!(
            router.topology().master(0),
            format!("127.0.0.1:{node_port}")
        );
        assert!(began.elapsed() < settings.reply_timeout);
        silent.set_nonblocking(true).expect("non-blocking");
        match silent.accept() {
            Err(error) if error.kind() == IoKind::WouldBlock => {}
            other => panic!("the URL's node was connected to: {other:?}"),
        }
        // The router's connections close with it, and the node's thread
        // ends on their end.
        drop(router);
        serving.join().expect("the node's thread");
    }

    #[test]
    fn the_key_is_found_in_commands_and_pipelines() {
        let get = redis::cmd("GET").arg("room:{a}:seq").get_packed_command();
        assert_eq!(first_key(&get), Some(&b"room:{a}:seq"[..]));
        let eval = redis::cmd("EVALSHA")
            .arg("abc")
            .arg(2)
            .arg("name:{b1}:x")
            .arg("name:{b1}:y")
            .arg("run")
            .get_packed_command();
        assert_eq!(first_key(&eval), Some(&b"name:{b1}:x"[..]));
        let none = redis::cmd("EVALSHA")
            .arg("abc")
            .arg(0)
            .arg("x")
            .get_packed_command();
        assert_eq!(first_key(&none), None);
        let publish = redis::cmd("PUBLISH")
            .arg("chat:ask")
            .arg("hi")
            .get_packed_command();
        assert_eq!(first_key(&publish), None);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg("chat:server-bans")
            .arg("x")
            .cmd("PUBLISH")
            .arg("chat:moderation")
            .arg("s x");
        let packed = pipe.get_packed_pipeline();
        assert_eq!(first_key(&packed), Some(&b"chat:server-bans"[..]));
        assert_eq!(command_name(&packed), Some(&b"MULTI"[..]));
    }

    #[test]
    fn a_pipeline_splits_into_its_commands() {
        let mut pipe = redis::pipe();
        pipe.cmd("GET")
            .arg("a")
            .cmd("SET")
            .arg("b")
            .arg("x y")
            .cmd("PING");
        let packed = pipe.get_packed_pipeline();
        let each: Vec<Vec<u8>> = vec![
            redis::cmd("GET").arg("a").get_packed_command(),
            redis::cmd("SET").arg("b").arg("x y").get_packed_command(),
            redis::cmd("PING").get_packed_command(),
        ];
        assert_eq!(commands(&packed), each);
        let ask = redis::parse_redis_value(b"-ASK 3999 127.0.0.1:6381\r\n").unwrap();
        assert_eq!(asked_to(&ask), Some("127.0.0.1:6381"));
        assert_eq!(asked_to(&Value::Okay), None);
    }
}

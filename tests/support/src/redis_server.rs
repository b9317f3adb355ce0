//! A `redis-server` of a test's own: Debian's package, started on a free
//! loopback port and stopped by its process id.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use secure_chat::linked::redis_link::LinkSettings;

use crate::TempDir;

/// The longest Redis may take to start or stop.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A `redis-server` of a test's own, on a free loopback port, in a
/// directory of its own; stopped by its process id when dropped.
pub struct Redis {
    child: Option<Child>,
    /// The plain port, which the tests' own connections use.
    pub port: u16,
    /// Its directory: its log, and its append-only file if it keeps one.
    pub dir: TempDir,
    /// Arguments after the common ones, to start it again alike.
    extra: Vec<String>,
}

impl Redis {
    /// Starts one on a free port, without persistence.
    pub fn start(extra: &[&str]) -> Redis {
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir: TempDir::new(),
            extra: extra.iter().map(|arg| arg.to_string()).collect(),
        };
        redis.spawn(&[]);
        redis
    }

    /// Starts the server process, with `more` arguments this time only,
    /// and waits until it answers.
    pub fn spawn(&mut self, more: &[&str]) {
        let log = fs::File::create(self.dir.path().join("redis.log")).expect("log file");
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", "", "--daemonize", "no"])
            .args(&self.extra)
            .args(more)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        let child = command
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.child = Some(child);
        self.wait_until_it_answers();
    }

    /// Until PING gets an answer, any answer but `-LOADING` (`-NOAUTH`
    /// counts: it is up). A Redis that restarts with an append-only file
    /// answers `-LOADING` to every command until it has read it.
    fn wait_until_it_answers(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut reply = [0u8; 16];
                if stream.write_all(b"PING\r\n").is_ok() {
                    if let Ok(n @ 1..) = stream.read(&mut reply) {
                        let reply = &reply[..n];
                        let loading = reply.starts_with(b"-LOADING");
                        if (reply[0] == b'+' || reply[0] == b'-') && !loading {
                            return;
                        }
                    }
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log =
                        fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                    panic!("redis-server ended ({status}) before answering:\n{log}");
                }
            }
            assert!(Instant::now() < deadline, "redis-server never answered");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server: SIGTERM (it saves what it persists, if anything),
    /// then SIGKILL if it has not ended within the timeout.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Where it listens, as a URL for `--redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// How many connections listen to `room`'s channel: how many nodes
    /// are in it.
    pub fn subscribers(&self, room: &str) -> i64 {
        let mut connection = self.connection(&self.url());
        let (_, subscribed): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("room:{{{room}}}"))
            .query(&mut connection)
            .expect("PUBSUB NUMSUB");
        subscribed
    }

    /// Waits until `count` nodes are in `room`: a node joins a room on
    /// its subscriber thread, a moment after it is asked to.
    pub fn wait_subscribed(&self, room: &str, count: i64) {
        let mut subscribed = 0;
        let reached = crate::wait_until(|| {
            subscribed = self.subscribers(room);
            subscribed == count
        });
        assert!(reached, "{subscribed} subscribers to {room}, not {count}");
    }

    /// How many times it ran `command` (lower case, `xrevrange`), as
    /// `INFO commandstats` counts them.
    pub fn calls(&self, command: &str) -> u64 {
        let mut connection = self.connection(&self.url());
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut connection)
            .expect("INFO commandstats");
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(&prefix)?.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// A plain connection, for what a test does to Redis behind the links.
    pub fn connection(&self, url: &str) -> redis::Connection {
        let mut connection = redis::Client::open(url)
            .and_then(|client| client.get_connection_with_timeout(TIMEOUT))
            .expect("test connection");
        // With a password, a Redis still reading its append-only file
        // answers the unauthenticated PING of `wait_until_it_answers` with
        // `-NOAUTH`: logged in, wait here until it has read it.
        let loaded = crate::wait_until(|| {
            let ping: redis::RedisResult<String> = redis::cmd("PING").query(&mut connection);
            !matches!(&ping, Err(err) if err.code() == Some("LOADING"))
        });
        assert!(loaded, "Redis still loading its data after {TIMEOUT:?}");
        connection
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Link settings that notice trouble within a second or so, for tests.
pub fn quick_link() -> LinkSettings {
    LinkSettings {
        ping_every: Duration::from_millis(300),
        reply_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        ..LinkSettings::default()
    }
}

/// Lines as the link keeps and publishes a batch of them: each as its
/// length in bytes, `:`, and the line.
pub fn frame(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|line| format!("{}:{line}", line.len()))
        .collect()
}

/// The lines of [`frame`]d text, in order. Panics, naming the rest,
/// unless the whole text is framed so.
pub fn unframe(mut text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some((len, rest)) = text.split_once(':') {
        let line = len
            .parse()
            .ok()
            .and_then(|len: usize| Some((rest.get(..len)?, rest.get(len..)?)));
        let Some((line, after)) = line else {
            panic!("not framed: {text:?}");
        };
        lines.push(line.to_owned());
        text = after;
    }
    assert!(text.is_empty(), "not framed: {text:?}");
    lines
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

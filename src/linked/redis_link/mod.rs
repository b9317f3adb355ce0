//! The link between chat servers: several servers, one chat, through Redis.
//!
//! One server knows only its own clients. To let alice on one machine talk
//! with bob on another, every server (a *node*, named by `--node-name`)
//! hands each room line to Redis, and Redis hands it to every node with
//! someone in that room. This module is that link, and nothing else: it
//! knows rooms, lines and names, never clients or sockets. The hub says
//! which rooms it has members in ([`RedisLink::join_room`],
//! [`RedisLink::leave_room`]) and what they said ([`RedisLink::publish`]); it hears
//! back, through a queue, every line of those rooms, its own included
//! ([`Delivery`]).
//!
//! ## Why pub/sub, and why it is not enough
//!
//! Redis' pub/sub is the fan-out: one `PUBLISH` on a room's channel
//! reaches every connection subscribed to it, at once, without Redis
//! keeping anything. That is also its weakness: a node that is not
//! connected at that moment (Redis restarted, the network hiccuped, Redis
//! cut the node off because it read too slowly, see
//! `client-output-buffer-limit pubsub`) never hears of the message, and
//! nothing tells it so.
//!
//! So each room line is also *numbered* and *kept*. One Lua script,
//! which Redis runs as one atomic step, does three things (four, for a
//! line that sets the room's topic: `SET room:{name}:topic` as well, so
//! that a node joining the room later is told it with the room's last
//! lines, [`Delivery::Recent`]):
//!
//! 1. `INCR room:{name}:seq`: the line's number in its room (its *seq*),
//!    1, 2, 3, ... The same number on every node, so every node shows the
//!    room's lines in the same order, whoever said them, wherever.
//! 2. `XADD room:{name}:history MAXLEN ~ N`: the line, kept in a capped
//!    stream under the id `seq-0`, so that lines can be asked for by
//!    number.
//! 3. `PUBLISH room:{name}`: `seq node line`, to every node in the room.
//!
//! Because the three happen together, whatever was published can be read
//! back, by number, and numbers have no holes. A node remembers, per room,
//! the next number it expects. A line with that number is delivered; a
//! smaller one was delivered already (it came with a fill) and is dropped;
//! a larger one means lines were lost on the way, and the missing numbers
//! are read from the history (`XRANGE`) and delivered first. So every
//! node delivers each line of its rooms exactly once, in number order,
//! its own lines included: a node shows its own users their line when it
//! comes back from Redis, not before, so that they see the order everyone
//! else sees.
//!
//! (The braces in the key names are Redis Cluster's *hash tags*: a room's
//! keys share one slot, which a script that touches several keys needs
//! there. On a single Redis they are only part of the name.)
//!
//! ## When Redis is gone
//!
//! The link notices within seconds: reads fail, or the `PING` sent on the
//! listening connection every [`LinkSettings::ping_every`] gets no answer (a
//! connection whose other end vanished without a word, say a cable pulled,
//! otherwise looks merely quiet). It says [`Delivery::LinkDown`], and from
//! then on [`RedisLink::publish`] refuses ([`Refused::Down`]): the hub keeps
//! the chat going among its own users, and what they say meanwhile stays
//! on this node (no other node hears it, nor is it kept). The link
//! reconnects on its own, waiting longer after each failure (0.2 s,
//! doubled each time up to 10 s, each wait a quarter longer or shorter at
//! random, so that many nodes do not all knock at the same instant).
//! Once back, it subscribes again, reads from the history every line of
//! its rooms it missed (what other nodes said during the outage, when they
//! could still reach Redis), delivers them, and only then says
//! [`Delivery::LinkUp`].
//!
//! What cannot come back: lines older than the history keeps
//! ([`LinkSettings::history`] per room; reported as [`Delivery::Missed`]),
//! and, if Redis itself lost its data (restarted without persistence),
//! the old numbering: a new one starts at 1. Each Redis data set carries a
//! random *epoch* (the `chat:epoch` key); a node that finds a different
//! one after reconnecting knows the numbers started over, so it reads each
//! room's new history from 1 and says so (`LinkUp { history_lost: true }`).
//! Redis must keep these keys: run it with `maxmemory-policy noeviction`
//! (the default).
//!
//! ## Threads and queues
//!
//! The hub never waits on Redis. Lines for Redis go through a bounded
//! queue to the *publisher* thread ([`LinkSettings::outbox`] lines; when it is
//! full, [`RedisLink::publish`] says [`Refused::Full`] at once), which runs the
//! script on its own connection, for up to 64 waiting lines per round trip
//! (a pipeline). A line it took is published exactly once, however many
//! times it must retry across reconnects: each carries the node's own
//! count, and the script ignores a count it has already seen.
//! The *subscriber* thread has two connections: one subscribed (a
//! subscribed connection can run nothing but (un)subscribe and `PING`), and
//! one to ask (`GET`, `XRANGE`). It hands [`Delivery`]s to the hub through
//! a bounded queue ([`LinkSettings::deliveries`]); when the hub is behind, the
//! subscriber waits, Redis buffers for it, and past Redis' limit Redis cuts
//! it off: which the subscriber recovers from like from any outage.
//! The rooms to be in are a set under a lock that no one holds across a
//! network wait; the subscriber looks at it between messages, and at least
//! every [`LinkSettings::poll`].
//!
//! The *directory* thread (`src/cluster/names.rs`) has a connection of its own for
//! nicks, private lines and questions to every node, each asked through
//! a bounded queue too and answered as a [`Delivery`].
//!
//! ## Names, private lines, questions
//!
//! A nick is claimed in Redis before a user takes it
//! ([`RedisLink::claim_name`]), under a key that holds this node's run and
//! lapses unless the node renews it: a node that dies frees its names by
//! itself. Each node also listens on a channel of its own, `node:{run}`,
//! where private lines for its users arrive ([`RedisLink::send_private`]:
//! looked up and published in one script), and on `chat:ask`, where any
//! node asks every node something ([`RedisLink::ask_everyone`]: who is in a
//! room, which rooms there are, where someone is). Every node answers for
//! its own users on the asker's channel, and the `PUBLISH` count says how
//! many answers to expect: presence is never stored, so it never goes
//! stale.
//!
//! The password in the URL is used to log in and nowhere else: errors and
//! logs name Redis by its host and port only.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};
use redis::{Client, Connection, ErrorKind, IntoConnectionInfo, RedisError, Script, Value};

mod names;

use crate::elsewhere::{Claim, Sent};
use names::{Ask, Directory};

/// The script that numbers, keeps and publishes one room line, as one
/// atomic step (see the module documentation).
///
/// KEYS: the room's sequence counter, its history stream, its hash of
/// senders (per node and run, the last count it published here), and its
/// topic. ARGV: the room's channel, the history's length, the sender, its
/// count, the node's name, the line, and `1` and a topic when the line
/// sets one (else `0` and nothing). Returns the line's seq, or 0 when that
/// count was published before (a retry after a reply that never arrived).
///
/// `string.format('%d')`, because Lua 5.1 would write a big number as
/// `1e+14`, which is no stream id.
const PUBLISH_SCRIPT: &str = r"
local last = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0')
local count = tonumber(ARGV[4])
if count <= last then
  return 0
end
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], string.format('%d-0', seq),
  'node', ARGV[5], 'line', ARGV[6])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[3], 86400)
if ARGV[7] == '1' then
  redis.call('SET', KEYS[4], ARGV[8])
end
redis.call('PUBLISH', ARGV[1], string.format('%d', seq) .. ' ' .. ARGV[5] .. ' ' .. ARGV[6])
return seq
";

/// The key whose random value names the Redis data set (see "When Redis
/// is gone" above).
const EPOCH_KEY: &str = "chat:epoch";

/// The channel every node listens to for questions to all
/// ([`RedisLink::ask_everyone`]).
const ASK_CHANNEL: &str = "chat:ask";

/// The counter that numbers nodes as they start ([`RedisLink::number`]).
const NODES_KEY: &str = "chat:nodes";

/// How many history entries one `XRANGE` asks for while filling a gap:
/// a long outage is read in pieces, not all in one reply.
const FILL_CHUNK: usize = 1000;

/// The shortest wait before reconnecting, doubled after each failure...
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// ... up to this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The longest node name; see [`RedisLink::start`] for the characters allowed.
pub const NODE_NAME_MAX: usize = 64;

/// The link's limits and clocks. [`LinkSettings::default`] suits a server.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// How many lines each room's history keeps (about: Redis trims the
    /// stream in whole blocks, `MAXLEN ~`). Bounds what a node can still
    /// fill in after an outage.
    pub history: usize,
    /// How many lines may wait for the publisher thread; past that,
    /// [`RedisLink::publish`] refuses.
    pub outbox: usize,
    /// How many deliveries may wait for the hub before the subscriber
    /// waits for it.
    pub deliveries: usize,
    /// How long the subscriber waits for a message before it looks at
    /// the rooms it should be in, its clock, and whether to stop.
    pub poll: Duration,
    /// How often the subscriber sends `PING` on its quiet connection.
    pub ping_every: Duration,
    /// How long any reply may take before the connection counts as dead.
    pub reply_timeout: Duration,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// For `rediss://`: the CA certificate (PEM) that Redis' certificate
    /// must chain to. Without it, the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// How many of a room's last lines [`Delivery::Recent`] carries when
    /// the node joins it.
    pub recent: usize,
    /// How long a nick stays claimed in Redis without its node renewing
    /// it (see [`RedisLink::claim_name`]): how soon the names of a node that
    /// crashed come free. Renewed three times in that span.
    pub name_ttl: Duration,
}

impl Default for LinkSettings {
    fn default() -> LinkSettings {
        LinkSettings {
            history: 10_000,
            outbox: 4096,
            deliveries: 4096,
            poll: Duration::from_millis(100),
            ping_every: Duration::from_secs(2),
            reply_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            ca_file: None,
            recent: 200,
            name_ttl: Duration::from_secs(30),
        }
    }
}

/// What the link tells the hub, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A line of a room this node is in. Per room, seqs come in order,
    /// each once; one that never comes is reported as [`Delivery::Missed`].
    Line {
        /// The room.
        room: String,
        /// Its number in the room, the same on every node.
        seq: u64,
        /// The node whose user said it (this one, for our own lines).
        node: String,
        /// The line, as given to [`RedisLink::publish`].
        line: String,
    },
    /// What a room had said before this node joined it: its last
    /// [`LinkSettings::recent`] lines (oldest first, as given to
    /// [`RedisLink::publish`]) and its topic. Comes once per
    /// [`RedisLink::join_room`], before any [`Delivery::Line`] of the room, and
    /// again only if the node joins the room anew.
    Recent {
        /// The room.
        room: String,
        /// Its last lines, oldest first.
        lines: Vec<String>,
        /// Its topic, if one was ever set ([`RedisLink::publish_topic`]).
        topic: Option<String>,
    },
    /// Lines `from..=to` of a room were lost to this node: trimmed from
    /// the history before the node could read them back.
    Missed {
        /// The room.
        room: String,
        /// The first number lost.
        from: u64,
        /// The last.
        to: u64,
    },
    /// Redis cannot be reached: [`RedisLink::publish`] refuses until
    /// [`Delivery::LinkUp`]. Said once per outage.
    LinkDown {
        /// What failed, for the log (no password in it).
        reason: String,
    },
    /// Redis is back, and every line missed meanwhile that could be read
    /// back has been delivered (before this).
    LinkUp {
        /// Redis lost its data while away: numbering started over, and
        /// what was said before is gone from the history.
        history_lost: bool,
    },
    /// The answer to [`RedisLink::claim_name`].
    Claimed {
        /// The name, in lower case.
        name: String,
        /// Whether it is this node's now.
        claim: Claim,
    },
    /// A name held for a user of this node is another node's: it lapsed
    /// while Redis was unreachable and someone took it (`lapsed`), or it
    /// was someone else's already when it was to be held
    /// ([`RedisLink::hold_name`]). Its user here must take another.
    NameLost {
        /// The name, in lower case.
        name: String,
        /// Whether this node held it before.
        lapsed: bool,
    },
    /// A private line for a user of this node, sent from any node
    /// ([`RedisLink::send_private`]).
    Private {
        /// The recipient's name, in lower case.
        to: String,
        /// The line, as given to [`RedisLink::send_private`].
        line: String,
    },
    /// Another node (or this one) asks every node something
    /// ([`RedisLink::ask_everyone`]); answer with [`RedisLink::reply`].
    Question {
        /// The asking node's run, to reply to.
        run: String,
        /// Its ticket, to reply with.
        ticket: u64,
        /// The question, as given to [`RedisLink::ask_everyone`].
        question: String,
    },
    /// How many nodes heard a question of this one: as many
    /// [`Delivery::Answer`]s are due, before or after this. `None` if
    /// Redis could not be asked.
    Asked {
        /// The question's ticket.
        ticket: u64,
        /// How many nodes heard it, this one included.
        nodes: Option<usize>,
    },
    /// One node's answer to a question of this one.
    Answer {
        /// The question's ticket.
        ticket: u64,
        /// The answer, as given to [`RedisLink::reply`].
        answer: String,
    },
    /// The answers to a question are due ([`LinkSettings::reply_timeout`]
    /// after it was asked): those still missing will not be waited for.
    AskTimedOut {
        /// The question's ticket.
        ticket: u64,
    },
    /// The answer to [`RedisLink::send_private`].
    PrivateSent {
        /// The ticket it was given.
        ticket: u64,
        /// Whether it reached the recipient's node.
        sent: Sent,
    },
}

/// Why [`RedisLink::publish`] did not take a line. It was sent nowhere: the
/// hub decides what its users are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// [`LinkSettings::outbox`] lines already wait for Redis.
    Full,
    /// Redis is unreachable (since [`Delivery::LinkDown`]).
    Down,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Full => f.write_str("too many lines wait for Redis"),
            Refused::Down => f.write_str("Redis is unreachable"),
        }
    }
}

/// Why [`RedisLink::start`] failed. Each says, in one line, what to fix.
#[derive(Debug)]
pub enum LinkError {
    /// The URL is not one of `redis://[[user]:password@]host[:port][/db]`
    /// or `rediss://...`. (Not repeated: it may hold a password.)
    BadUrl,
    /// The node name is empty, too long, or has other characters than
    /// letters, digits, `.`, `_` and `-`.
    BadNodeName(String),
    /// The CA file for `rediss://` could not be read.
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// No connection to Redis could be made.
    Unreachable {
        /// Redis' host and port.
        addr: String,
        /// Why, as the client library said it.
        reason: String,
    },
    /// The TLS handshake failed: most often, Redis' certificate does not
    /// chain to a trusted CA ([`LinkSettings::ca_file`]) or does not name the
    /// host in the URL.
    Tls {
        /// Redis' host and port.
        addr: String,
        /// What rustls said.
        reason: String,
    },
    /// Redis refused the user name or password.
    Login {
        /// Redis' host and port.
        addr: String,
        /// What Redis said.
        reason: String,
    },
    /// Redis answered, but refused what the link needs (an ACL user not
    /// allowed `EVALSHA`, say).
    Denied {
        /// Redis' host and port.
        addr: String,
        /// What Redis said.
        reason: String,
    },
    /// The link's threads could not be started.
    Spawn(io::Error),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::BadUrl => f.write_str(
                "--redis: not a Redis URL (expected redis://[[user]:password@]host[:port][/db] \
                 or rediss://...)",
            ),
            LinkError::BadNodeName(name) => write!(
                f,
                "--node-name {name:?}: use 1 to {NODE_NAME_MAX} letters, digits, '.', '_' or '-'"
            ),
            LinkError::CaFile { path, source } => {
                write!(f, "cannot read Redis CA file {}: {source}", path.display())
            }
            LinkError::Unreachable { addr, reason } => {
                write!(f, "cannot reach Redis at {addr}: {reason}")
            }
            LinkError::Tls { addr, reason } => {
                write!(f, "TLS with Redis at {addr} failed: {reason}")
            }
            LinkError::Login { addr, reason } => {
                write!(f, "Redis at {addr} refused the login: {reason}")
            }
            LinkError::Denied { addr, reason } => {
                write!(f, "Redis at {addr} refused the chat's commands: {reason}")
            }
            LinkError::Spawn(source) => {
                write!(f, "cannot start the Redis link's threads: {source}")
            }
        }
    }
}

impl std::error::Error for LinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LinkError::CaFile { source, .. } | LinkError::Spawn(source) => Some(source),
            _ => None,
        }
    }
}

/// The key names of one room. The braces make the room's name a Redis
/// Cluster hash tag (see the module documentation).
struct Keys {
    seq: String,
    history: String,
    senders: String,
    topic: String,
    channel: String,
}

impl Keys {
    fn of(room: &str) -> Keys {
        Keys {
            seq: format!("room:{{{room}}}:seq"),
            history: format!("room:{{{room}}}:history"),
            senders: format!("room:{{{room}}}:senders"),
            topic: format!("room:{{{room}}}:topic"),
            channel: channel(room),
        }
    }
}

/// A room's pub/sub channel.
fn channel(room: &str) -> String {
    format!("room:{{{room}}}")
}

/// The room whose channel this is, if it is one.
fn room_of(channel: &str) -> Option<&str> {
    channel.strip_prefix("room:{")?.strip_suffix('}')
}

/// Reads a channel's message back, `seq node line` as the script wrote
/// it; `None` for anything else.
fn parse_payload(bytes: &[u8]) -> Option<(u64, &str, &str)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parts = text.splitn(3, ' ');
    let seq = parts.next()?.parse().ok()?;
    let node = parts.next()?;
    let line = parts.next()?;
    Some((seq, node, line))
}

/// A node name: what other nodes and the logs know this server by, and
/// part of what goes on each channel (so no spaces).
fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NODE_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// 64 random bits, for jitter and for naming this run of the node. Not for
/// secrets: std's hasher keys are random per process, which is all that
/// is needed here.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.finish()
}

/// The waits between reconnection attempts: [`BACKOFF_MIN`], doubled
/// after each failure up to [`BACKOFF_MAX`], each ±25 % at random.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }

    /// The next wait, given a random number; doubles the one after.
    fn next_with(&mut self, random: u64) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(BACKOFF_MAX);
        // A factor from 0.75 to 1.25.
        let factor = 0.75 + (random % 1001) as f64 / 2000.0;
        base.mul_f64(factor)
    }

    fn next(&mut self) -> Duration {
        self.next_with(random_u64())
    }

    /// After a success: the next failure starts from the shortest wait.
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// What every thread of the link shares.
struct LinkState {
    /// Set by [`RedisLink`]'s drop: the threads end.
    stop: AtomicBool,
    /// Whether the subscriber is connected: [`RedisLink::publish`] refuses
    /// while it is not.
    up: AtomicBool,
    /// The rooms the hub wants the node in, each with the number of the
    /// join that put it there: a room left and joined again between two
    /// looks of the subscriber is a new join all the same.
    rooms: Mutex<Rooms>,
    /// Set when `rooms` changed, cleared by the subscriber when it looks.
    rooms_changed: AtomicBool,
    /// See [`RedisLink::number`]: taken again when Redis lost its data.
    number: AtomicU64,
}

impl LinkState {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn wanted_rooms(&self) -> BTreeMap<String, u64> {
        self.rooms_changed.store(false, Ordering::SeqCst);
        self.rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .wanted
            .clone()
    }
}

/// The rooms to be in, by the number of the join that asked.
#[derive(Debug, Default)]
struct Rooms {
    wanted: BTreeMap<String, u64>,
    joins: u64,
}

/// Where Redis is, and how to log in; the one thing that holds the
/// password. Its `Debug` says only `addr`.
struct Target {
    client: Client,
    /// `host:port`, for errors and logs.
    addr: String,
    /// To blank out of any message that might carry it.
    password: Option<String>,
    settings: LinkSettings,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target").field("addr", &self.addr).finish()
    }
}

impl Target {
    fn new(url: &str, settings: &LinkSettings) -> Result<Target, LinkError> {
        let info = url.into_connection_info().map_err(|_| LinkError::BadUrl)?;
        let addr = info.addr().to_string();
        let password = info.redis_settings().password().map(str::to_owned);
        // RESP2: a subscribed connection then answers only (un)subscribe
        // and PING, the behaviour the subscriber is written for, whatever
        // `?protocol=` the URL asks.
        let redis = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP2);
        let info = info.set_redis_settings(redis);
        let client = match &settings.ca_file {
            None => Client::open(info),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| LinkError::CaFile {
                    path: path.clone(),
                    source,
                })?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                Client::build_with_tls(info, certificates)
            }
        }
        .map_err(|_| LinkError::BadUrl)?;
        Ok(Target {
            client,
            addr,
            password,
            settings: settings.clone(),
        })
    }

    /// One connection, with every read and write bounded in time.
    fn connect(&self) -> redis::RedisResult<Connection> {
        let settings = &self.settings;
        let connection = self
            .client
            .get_connection_with_timeout(settings.connect_timeout)?;
        connection.set_read_timeout(Some(settings.reply_timeout))?;
        connection.set_write_timeout(Some(settings.reply_timeout))?;
        Ok(connection)
    }

    /// What an error says, with the password (should a message ever
    /// quote it) blanked out.
    fn describe(&self, error: &RedisError) -> String {
        let text = error.to_string();
        match &self.password {
            Some(password) if !password.is_empty() => text.replace(password.as_str(), "***"),
            _ => text,
        }
    }

    /// An error of [`RedisLink::start`], by what the user has to fix.
    fn start_error(&self, error: &RedisError) -> LinkError {
        let addr = self.addr.clone();
        let reason = self.describe(error);
        let login = error.kind() == ErrorKind::AuthenticationFailed
            || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"));
        let tls = is_tls_error(error);
        if login {
            LinkError::Login { addr, reason }
        } else if tls {
            LinkError::Tls { addr, reason }
        } else if error.is_io_error() || error.is_timeout() || error.is_connection_refusal() {
            LinkError::Unreachable { addr, reason }
        } else {
            LinkError::Denied { addr, reason }
        }
    }
}

/// Whether rustls is behind `error`. The client library keeps the
/// `io::Error` it got (rustls' error inside) behind an `Arc`, and
/// `io::Error::source` skips the error it wraps, so the chain is walked
/// by hand.
fn is_tls_error(error: &RedisError) -> bool {
    type LinkState = Arc<dyn std::error::Error + Send + Sync>;
    use std::error::Error as _;
    let Some(cause) = error.source() else {
        return false;
    };
    let io = cause
        .downcast_ref::<LinkState>()
        .and_then(|shared| shared.downcast_ref::<io::Error>())
        .or_else(|| cause.downcast_ref::<io::Error>());
    io.and_then(io::Error::get_ref)
        .is_some_and(|inner| inner.is::<rustls::Error>())
}

/// Reads the data set's epoch, making one if it has none.
fn epoch(connection: &mut Connection) -> redis::RedisResult<String> {
    let fresh = format!("{:016x}", random_u64());
    redis::cmd("SET")
        .arg(EPOCH_KEY)
        .arg(fresh)
        .arg("NX")
        .exec(connection)?;
    redis::cmd("GET").arg(EPOCH_KEY).query(connection)
}

/// The highest seq a room has had (0 for a room never spoken in).
fn current_seq(connection: &mut Connection, room: &str) -> redis::RedisResult<u64> {
    let seq: Option<u64> = redis::cmd("GET")
        .arg(Keys::of(room).seq)
        .query(connection)?;
    Ok(seq.unwrap_or(0))
}

/// One line for the publisher thread.
#[derive(Debug)]
struct ToPublish {
    room: String,
    line: String,
    /// The room's new topic, if the line sets one.
    topic: Option<String>,
}

/// The node's end of the link. Dropping it first gives the publisher up
/// to [`LinkSettings::reply_timeout`] to hand Redis the lines already given
/// (those still waiting then are not published), then stops the link's
/// threads and waits for them: each is at most a connection attempt or a
/// reply or two away from noticing ([`LinkSettings::connect_timeout`],
/// [`LinkSettings::reply_timeout`]), and the directory first lets this node's
/// names go.
#[derive(Debug)]
pub struct RedisLink {
    /// This run of the node, unlike any other run of any node:
    /// `NODE/RANDOM`.
    run: String,
    outbox: Option<Sender<ToPublish>>,
    /// Work for the directory thread (claims, private lines, questions).
    asks: Option<Sender<Ask>>,
    /// Names held and let go, for the directory thread: never refused
    /// (one per arrival or departure), so that no name is left held, or
    /// left unclaimed, because a queue was full or Redis away.
    names: Option<Sender<Ask>>,
    shared: Arc<LinkState>,
    /// Dropped to wake the threads from a wait between reconnections.
    wake: Option<Sender<()>>,
    /// Disconnects when the publisher thread ends: at the drop, once the
    /// outbox is empty.
    published: Option<Receiver<()>>,
    /// [`LinkSettings::reply_timeout`]: how long the drop waits for that.
    reply_timeout: Duration,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkState")
            .field("up", &self.up.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl RedisLink {
    /// Connects to Redis at `url` as node `node` and starts the link's
    /// three threads; what they deliver comes out of the receiver.
    ///
    /// `url` is `redis://[[user]:password@]host[:port][/db]`, or
    /// `rediss://` for TLS (Redis' certificate must chain to the system's
    /// roots, or to [`LinkSettings::ca_file`], and name the host). `node` is
    /// 1 to [`NODE_NAME_MAX`] ASCII letters, digits, `.`, `_` or `-`.
    ///
    /// Fails, with a one-line [`LinkError`], unless Redis answers and accepts
    /// the login and the script now: a server started with a wrong
    /// `--redis` should say so at once, not retry in the background.
    /// Once started, the link never gives up.
    pub fn start(
        url: &str,
        node: &str,
        settings: LinkSettings,
    ) -> Result<(RedisLink, Receiver<Delivery>), LinkError> {
        if !valid_node_name(node) {
            return Err(LinkError::BadNodeName(node.to_owned()));
        }
        let target = Arc::new(Target::new(url, &settings)?);
        let fail = |error: RedisError| target.start_error(&error);
        let mut publish = target.connect().map_err(fail)?;
        let mut query = target.connect().map_err(fail)?;
        let listen = target.connect().map_err(fail)?;
        let directory_connection = target.connect().map_err(fail)?;
        let script = Script::new(PUBLISH_SCRIPT);
        script.load(&mut publish).map_err(fail)?;
        let first_epoch = epoch(&mut query).map_err(fail)?;
        let number: u64 = redis::cmd("INCR")
            .arg(NODES_KEY)
            .query(&mut query)
            .map_err(fail)?;

        let shared = Arc::new(LinkState {
            stop: AtomicBool::new(false),
            up: AtomicBool::new(true),
            rooms: Mutex::new(Rooms::default()),
            rooms_changed: AtomicBool::new(false),
            number: AtomicU64::new(number),
        });
        let (outbox, outgoing) = crossbeam_channel::bounded(settings.outbox.max(1));
        let (deliver, deliveries) = crossbeam_channel::bounded(settings.deliveries.max(1));
        let (wake, woken) = crossbeam_channel::bounded::<()>(0);
        let (ask, asks) = crossbeam_channel::bounded(settings.outbox.max(1));
        let (name_changes, names_changed) = crossbeam_channel::unbounded();
        let run = format!("{node}/{:016x}", random_u64());
        let directory = Directory {
            target: Arc::clone(&target),
            shared: Arc::clone(&shared),
            deliver: deliver.clone(),
            run: run.clone(),
            held: BTreeSet::new(),
            waiting: VecDeque::new(),
            answer_within: settings.reply_timeout,
        };

        let (publishing, published) = crossbeam_channel::bounded::<()>(0);
        let publisher = Publisher {
            _publishing: publishing,
            target: Arc::clone(&target),
            shared: Arc::clone(&shared),
            woken: woken.clone(),
            script,
            node: node.to_owned(),
            sender: run.clone(),
            count: 0,
        };
        let subscriber = Subscriber {
            target,
            shared: Arc::clone(&shared),
            woken,
            deliver,
            epoch: first_epoch,
            own_channel: names::node_channel(&run),
            names: name_changes.clone(),
            next: HashMap::new(),
            joined: HashMap::new(),
            down: false,
        };
        let spawn = |name: &str, run: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name.to_owned())
                .spawn(run)
                .map_err(LinkError::Spawn)
        };
        let threads = vec![
            spawn(
                "redis-publish",
                Box::new(move || publisher.run(outgoing, publish)),
            )?,
            spawn(
                "redis-subscribe",
                Box::new(move || subscriber.run(listen, query)),
            )?,
            spawn(
                "redis-names",
                Box::new(move || directory.run(asks, names_changed, directory_connection)),
            )?,
        ];
        let link = RedisLink {
            run,
            outbox: Some(outbox),
            asks: Some(ask),
            names: Some(name_changes),
            published: Some(published),
            reply_timeout: settings.reply_timeout,
            shared,
            wake: Some(wake),
            threads,
        };
        Ok((link, deliveries))
    }

    /// Hands `line` of `room` to Redis, without waiting: it is queued for
    /// the publisher thread, and comes back as a [`Delivery::Line`] (on
    /// every node in the room, this one included) once Redis has it.
    ///
    /// Refuses at once, and the line goes nowhere, when
    /// [`LinkSettings::outbox`] lines already wait ([`Refused::Full`]) or
    /// Redis is unreachable ([`Refused::Down`]). A line taken while the
    /// link was up but that could not yet reach Redis when it went down
    /// is published when it comes back.
    pub fn publish(&self, room: &str, line: &str) -> Result<(), Refused> {
        self.send(room, line, None)
    }

    /// Like [`RedisLink::publish`], for a line that also sets the room's topic:
    /// kept in Redis with the line, in the same atomic step, so that a
    /// node joining the room later finds it ([`Delivery::Recent`]).
    pub fn publish_topic(&self, room: &str, line: &str, topic: &str) -> Result<(), Refused> {
        self.send(room, line, Some(topic))
    }

    fn send(&self, room: &str, line: &str, topic: Option<&str>) -> Result<(), Refused> {
        if !self.shared.up.load(Ordering::SeqCst) {
            return Err(Refused::Down);
        }
        let Some(outbox) = &self.outbox else {
            return Err(Refused::Down);
        };
        let outgoing = ToPublish {
            room: room.to_owned(),
            line: line.to_owned(),
            topic: topic.map(str::to_owned),
        };
        match outbox.try_send(outgoing) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Refused::Full),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Down),
        }
    }

    /// The node has members in `room` now: hear what it said before
    /// ([`Delivery::Recent`]), then its lines from the next one said. Call
    /// it when the room's first local member arrives; each call is a new
    /// join, with its own `Recent`, even if the room was never left.
    pub fn join_room(&self, room: &str) {
        self.change_rooms(|rooms| {
            rooms.joins += 1;
            rooms.wanted.insert(room.to_owned(), rooms.joins);
            true
        });
        // Lines said there before the subscription are the room's past,
        // told as such: the sooner it subscribes, the less falls there.
        // The subscriber sits in a read of up to a poll; a message on its
        // own channel ends the read at once.
        let _ = self.ask(Ask::Wake);
    }

    /// The node has no one left in `room`: stop hearing it. Lines of the
    /// room still on their way are dropped.
    pub fn leave_room(&self, room: &str) {
        self.change_rooms(|rooms| rooms.wanted.remove(room).is_some());
    }

    fn change_rooms(&self, change: impl FnOnce(&mut Rooms) -> bool) {
        let mut rooms = self
            .shared
            .rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if change(&mut rooms) {
            self.shared.rooms_changed.store(true, Ordering::SeqCst);
        }
    }

    /// Asks Redis for `name` (in lower case) for a user of this node; the
    /// answer comes as [`Delivery::Claimed`]. A name this node holds is
    /// renewed until [`RedisLink::release_name`], and taken back after an
    /// outage ([`Delivery::NameLost`] if someone else took it meanwhile).
    /// Claiming a name this node holds already answers [`Claim::Ours`].
    ///
    /// Refuses at once when Redis is unreachable or too much waits:
    /// nobody can say then whether the name is free.
    pub fn claim_name(&self, name: &str) -> Result<(), Refused> {
        self.ask(Ask::Claim(name.to_owned()))
    }

    /// Holds `name` (in lower case) for a user of this node from now on,
    /// without an answer: for a name no other node gives out (a guest's,
    /// `guestN-ID` with this node's [`RedisLink::number`]) or that a
    /// certificate proves. It is claimed as soon as Redis can be reached;
    /// should another node have it, [`Delivery::NameLost`] says so.
    pub fn hold_name(&self, name: &str) {
        if let Some(names) = &self.names {
            let _ = names.send(Ask::Hold(name.to_owned()));
        }
    }

    /// Lets `name` go, if this node still holds it: at once, or, when
    /// Redis cannot be told, as soon as it can (meanwhile it is no longer
    /// renewed, so it may lapse first).
    pub fn release_name(&self, name: &str) {
        if let Some(names) = &self.names {
            let _ = names.send(Ask::Release(name.to_owned()));
        }
    }

    /// Sends `line` to whoever holds `to` (in lower case), on whichever
    /// node: it comes out there as [`Delivery::Private`], and the answer
    /// here as [`Delivery::PrivateSent`] with `ticket`.
    pub fn send_private(&self, ticket: u64, to: &str, line: &str) -> Result<(), Refused> {
        self.ask(Ask::Private {
            ticket,
            to: to.to_owned(),
            line: line.to_owned(),
        })
    }

    /// Asks every node connected to Redis `question` (one line, no
    /// newline), this one included: each hears it as
    /// [`Delivery::Question`] and answers with [`RedisLink::reply`]. Here come
    /// [`Delivery::Asked`] (how many heard it), their
    /// [`Delivery::Answer`]s, and [`Delivery::AskTimedOut`] when the
    /// time for answers is up. Nodes answer for themselves, so a node
    /// that died is simply not among them: nothing in Redis goes stale.
    pub fn ask_everyone(&self, ticket: u64, question: &str) -> Result<(), Refused> {
        self.ask(Ask::Everyone {
            ticket,
            question: question.to_owned(),
        })
    }

    /// Answers a [`Delivery::Question`] of node `run`.
    pub fn reply(&self, run: &str, ticket: u64, answer: &str) {
        let reply = Ask::Reply {
            run: run.to_owned(),
            ticket,
            answer: answer.to_owned(),
        };
        if self.ask(reply).is_err() {
            log::debug!("an answer to {run} could not go");
        }
    }

    fn ask(&self, ask: Ask) -> Result<(), Refused> {
        if !self.is_up() {
            return Err(Refused::Down);
        }
        let Some(asks) = &self.asks else {
            return Err(Refused::Down);
        };
        match asks.try_send(ask) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Refused::Full),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Down),
        }
    }

    /// This node's number among all that ever started on this Redis
    /// (`INCR chat:nodes` at start): 1, 2, 3, ... and never the same
    /// twice while Redis keeps its data. If Redis loses it, the node
    /// takes a new one before it says [`Delivery::LinkUp`].
    pub fn number(&self) -> u64 {
        self.shared.number.load(Ordering::SeqCst)
    }

    /// This run of the node, `NODE/RANDOM`: what a node can tag its own
    /// lines with, to know them when they come back. Two runs of one
    /// node, or two nodes given one name, never share it.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// Whether Redis is reachable, as far as the link knows.
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::SeqCst)
    }
}

impl Drop for RedisLink {
    fn drop(&mut self) {
        // The lines already given (the goodbyes of a server that stops)
        // go out first, if Redis takes them within a reply's time.
        self.outbox = None;
        if let Some(published) = self.published.take() {
            let _ = published.recv_timeout(self.reply_timeout);
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        self.asks = None;
        self.names = None;
        self.wake = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Waits `wait`, or less if the link stops. True if it is stopping.
fn pause(shared: &LinkState, woken: &Receiver<()>, wait: Duration) -> bool {
    if shared.stopping() {
        return true;
    }
    // Nothing is ever sent: this returns when the wait is over, or at once
    // once the RedisLink has dropped its end.
    let _ = woken.recv_timeout(wait);
    shared.stopping()
}

/// Whether an error of the publisher's command is worth a retry on a new
/// connection: the connection broke, or Redis is not ready yet.
fn is_transient(error: &RedisError) -> bool {
    use redis::ServerErrorKind as Server;
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        // Redis came back asking for a login this connection never made.
        || error.kind() == ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("NOAUTH"))
        || matches!(
            error.kind(),
            ErrorKind::Server(
                Server::BusyLoading | Server::TryAgain | Server::MasterDown | Server::ReadOnly
            )
        )
}

/// The most lines the publisher sends in one round trip (a pipeline):
/// one round trip per line would cap a node at a few thousand lines a
/// second on a real network.
const BATCH: usize = 64;

/// How many times the publisher tries a batch Redis refuses for another
/// reason (out of memory, say) before it drops it. (A line refused while
/// a later one of its room in the same batch went through is dropped at
/// once: the later count marks it as done.)
const REFUSALS_BEFORE_DROP: u32 = 5;

/// The publisher thread: runs the script for each line, in order, on its
/// own connection.
struct Publisher {
    /// Dropped with the thread: [`RedisLink`]'s drop waits for that.
    _publishing: Sender<()>,
    target: Arc<Target>,
    shared: Arc<LinkState>,
    woken: Receiver<()>,
    script: Script,
    node: String,
    /// This run of the node, as the script's senders hash knows it.
    sender: String,
    /// How many lines this run has taken: each line's count.
    count: u64,
}

impl Publisher {
    fn run(mut self, outgoing: Receiver<ToPublish>, connection: Connection) {
        let mut connection = Some(connection);
        let poll = self.target.settings.poll;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let first = match outgoing.recv_timeout(poll) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) if !self.shared.stopping() => continue,
                Err(_) => return,
            };
            // Whatever else waits goes in the same round trip.
            batch.push(self.numbered(first));
            while batch.len() < BATCH {
                match outgoing.try_recv() {
                    Ok(line) => batch.push(self.numbered(line)),
                    Err(_) => break,
                }
            }
            if !self.publish(&mut connection, &batch) {
                return;
            }
            batch.clear();
        }
    }

    /// The line, with its count.
    fn numbered(&mut self, line: ToPublish) -> (u64, ToPublish) {
        self.count += 1;
        (self.count, line)
    }

    /// One `EVALSHA` per line, all in one pipeline.
    fn pipeline(&self, batch: &[(u64, ToPublish)]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for (count, line) in batch {
            let keys = Keys::of(&line.room);
            pipe.cmd("EVALSHA")
                .arg(self.script.get_hash())
                .arg(4)
                .arg(&keys.seq)
                .arg(&keys.history)
                .arg(&keys.senders)
                .arg(&keys.topic)
                .arg(&keys.channel)
                .arg(self.target.settings.history)
                .arg(&self.sender)
                .arg(count)
                .arg(&self.node)
                .arg(&line.line);
            match &line.topic {
                Some(topic) => pipe.arg(1).arg(topic),
                None => pipe.arg(0),
            };
        }
        pipe
    }

    /// Publishes a batch of lines, retrying across reconnections until
    /// Redis has them all. A retry sends the whole batch again: the lines
    /// Redis already had are recognised by their counts and skipped. False
    /// if the link stops first.
    fn publish(&self, connection: &mut Option<Connection>, batch: &[(u64, ToPublish)]) -> bool {
        let pipe = self.pipeline(batch);
        let mut backoff = Backoff::new();
        let mut refusals = 0;
        loop {
            if self.shared.stopping() {
                return false;
            }
            let Some(open) = connection.as_mut() else {
                match self.target.connect() {
                    Ok(fresh) => *connection = Some(fresh),
                    Err(error) => {
                        log::debug!(
                            "redis {}: publisher cannot connect: {}",
                            self.target.addr,
                            self.target.describe(&error)
                        );
                        if pause(&self.shared, &self.woken, backoff.next()) {
                            return false;
                        }
                    }
                }
                continue;
            };
            let error = match pipe.exec(open) {
                Ok(()) => return true,
                Err(error) => error,
            };
            // A Redis that restarted has forgotten the script: load it
            // again and retry at once.
            if error.kind() == ErrorKind::Server(redis::ServerErrorKind::NoScript) {
                if self.script.load(open).is_ok() {
                    continue;
                }
                *connection = None;
                continue;
            }
            let reason = self.target.describe(&error);
            if is_transient(&error) {
                log::debug!("redis {}: publish failed: {reason}", self.target.addr);
                // A new connection: this one may hold late replies.
                *connection = None;
            } else {
                refusals += 1;
                if refusals >= REFUSALS_BEFORE_DROP {
                    log::warn!(
                        "redis {}: {} lines dropped: {reason}",
                        self.target.addr,
                        batch.len()
                    );
                    return true;
                }
            }
            if pause(&self.shared, &self.woken, backoff.next()) {
                return false;
            }
        }
    }
}

/// Why a subscriber's session ended.
enum SubscriberEnd {
    /// The link is stopping, or nobody takes deliveries any more.
    Stop,
    /// Redis went away, or answered wrong: reconnect.
    Lost(String),
}

/// The subscriber thread's state, kept across connections.
struct Subscriber {
    target: Arc<Target>,
    shared: Arc<LinkState>,
    woken: Receiver<()>,
    deliver: Sender<Delivery>,
    /// The data set's epoch when last connected.
    epoch: String,
    /// Where private lines for this node's users come.
    own_channel: String,
    /// To tell the directory thread when Redis is back (on the queue
    /// that is never full).
    names: Sender<Ask>,
    /// Per room subscribed to, the next seq to deliver.
    next: HashMap<String, u64>,
    /// Per room subscribed to, the join it was for.
    joined: HashMap<String, u64>,
    /// Whether `LinkDown` was said, and `LinkUp` is owed.
    down: bool,
}

impl Subscriber {
    fn run(mut self, listen: Connection, query: Connection) {
        let mut connections = Some((listen, query));
        let mut backoff = Backoff::new();
        loop {
            let (mut listen, mut query) = match connections.take() {
                Some(pair) => pair,
                None => match self.target.connect().and_then(|listen| {
                    let query = self.target.connect()?;
                    Ok((listen, query))
                }) {
                    Ok(pair) => pair,
                    Err(error) => {
                        log::debug!(
                            "redis {}: cannot reconnect: {}",
                            self.target.addr,
                            self.target.describe(&error)
                        );
                        if pause(&self.shared, &self.woken, backoff.next()) {
                            return;
                        }
                        continue;
                    }
                },
            };
            match self.session(&mut listen, &mut query, &mut backoff) {
                SubscriberEnd::Stop => return,
                SubscriberEnd::Lost(reason) => {
                    self.shared.up.store(false, Ordering::SeqCst);
                    if !self.down {
                        self.down = true;
                        log::warn!("redis {}: link down: {reason}", self.target.addr);
                        if self.send(Delivery::LinkDown { reason }).is_err() {
                            return;
                        }
                    }
                    if pause(&self.shared, &self.woken, backoff.next()) {
                        return;
                    }
                }
            }
        }
    }

    /// One connection's life: catch up, then listen until it fails.
    fn session(
        &mut self,
        listen: &mut Connection,
        query: &mut Connection,
        backoff: &mut Backoff,
    ) -> SubscriberEnd {
        let lost =
            |target: &Target, error: RedisError| SubscriberEnd::Lost(target.describe(&error));
        let epoch = match epoch(query) {
            Ok(epoch) => epoch,
            Err(error) => return lost(&self.target, error),
        };
        let history_lost = epoch != self.epoch;
        if history_lost {
            // A new data set: its numbers start at 1, and so does what the
            // node has yet to deliver.
            log::warn!(
                "redis {}: Redis lost its data; room numbering starts over",
                self.target.addr
            );
            // The node numbers start over too: this node takes a new one,
            // unlike any other node's from now on, for its new guests.
            match redis::cmd("INCR").arg(NODES_KEY).query::<u64>(query) {
                Ok(number) => self.shared.number.store(number, Ordering::SeqCst),
                Err(error) => return lost(&self.target, error),
            }
            self.epoch = epoch;
            for next in self.next.values_mut() {
                *next = 1;
            }
        }
        let target = Arc::clone(&self.target);
        let settings = &target.settings;
        let mut pubsub = listen.as_pubsub();
        let wanted = self.shared.wanted_rooms();
        self.forget_rooms_not_in(&wanted);
        // A private line sent while the node was away is lost: its
        // sender was told nobody by that name is connected.
        if let Err(error) = pubsub.subscribe(&[self.own_channel.as_str(), ASK_CHANNEL]) {
            return lost(&self.target, error);
        }
        let rooms: Vec<(&String, u64)> = wanted.iter().map(|(room, &join)| (room, join)).collect();
        if let Err(end) = self.subscribe(&mut pubsub, query, &rooms) {
            return end;
        }
        backoff.reset();
        self.shared.up.store(true, Ordering::SeqCst);
        if self.down {
            self.down = false;
            // Names first: a claim from elsewhere must not find them
            // lapsed (or, after Redis lost its data, gone).
            let _ = self.names.send(Ask::Renew);
            log::info!("redis {}: link up", self.target.addr);
            if self.send(Delivery::LinkUp { history_lost }).is_err() {
                return SubscriberEnd::Stop;
            }
        }
        let mut last_ping = Instant::now();
        if let Err(error) = pubsub.set_read_timeout(Some(settings.poll)) {
            return lost(&self.target, error);
        }
        loop {
            if self.shared.stopping() {
                return SubscriberEnd::Stop;
            }
            if self.shared.rooms_changed.load(Ordering::SeqCst) {
                if let Err(end) = self.change_rooms(&mut pubsub, query) {
                    return end;
                }
            }
            if last_ping.elapsed() >= settings.ping_every {
                // The reply may take longer than a poll: wait for it as
                // for any reply. Messages that come first are kept.
                let pinged = pubsub
                    .set_read_timeout(Some(settings.reply_timeout))
                    .and_then(|()| pubsub.ping::<Value>())
                    .and_then(|_| pubsub.set_read_timeout(Some(settings.poll)));
                if let Err(error) = pinged {
                    return lost(&self.target, error);
                }
                last_ping = Instant::now();
            }
            match pubsub.get_message() {
                Ok(message) => {
                    let channel = message.get_channel_name();
                    if channel == self.own_channel || channel == ASK_CHANNEL {
                        let bytes = message.get_payload_bytes();
                        let to_us = channel == self.own_channel;
                        if let Err(end) = self.on_node_message(to_us, bytes) {
                            return end;
                        }
                        continue;
                    }
                    let Some(room) = room_of(channel) else {
                        continue;
                    };
                    let room = room.to_owned();
                    if let Err(end) = self.on_message(query, &room, message.get_payload_bytes()) {
                        return end;
                    }
                }
                // Quiet: time to look at the rooms, the clock, the stop.
                Err(error) if error.is_timeout() => {}
                Err(error) => return lost(&self.target, error),
            }
        }
    }

    /// Subscribes to the rooms the hub now wants, and unsubscribes from
    /// those it left.
    fn change_rooms(
        &mut self,
        pubsub: &mut redis::PubSub<'_>,
        query: &mut Connection,
    ) -> Result<(), SubscriberEnd> {
        let lost =
            |target: &Target, error: RedisError| SubscriberEnd::Lost(target.describe(&error));
        let target = Arc::clone(&self.target);
        let settings = &target.settings;
        let wanted = self.shared.wanted_rooms();
        let gone: Vec<String> = self
            .next
            .keys()
            .filter(|room| !wanted.contains_key(*room))
            .cloned()
            .collect();
        // Joined anew since the last look: start over, as for a new room.
        self.forget_rooms_not_in(&wanted);
        let new: Vec<(&String, u64)> = wanted
            .iter()
            .filter(|(room, _)| !self.next.contains_key(*room))
            .map(|(room, &join)| (room, join))
            .collect();
        pubsub
            .set_read_timeout(Some(settings.reply_timeout))
            .map_err(|error| lost(&self.target, error))?;
        if !gone.is_empty() {
            let channels: Vec<String> = gone.iter().map(|room| channel(room)).collect();
            pubsub
                .unsubscribe(channels)
                .map_err(|error| lost(&self.target, error))?;
        }
        // Subscribing again to a channel already subscribed to changes
        // nothing in Redis.
        self.subscribe(pubsub, query, &new)?;
        pubsub
            .set_read_timeout(Some(settings.poll))
            .map_err(|error| lost(&self.target, error))
    }

    /// Forgets the rooms the hub no longer wants, or wants for a newer
    /// join.
    fn forget_rooms_not_in(&mut self, wanted: &BTreeMap<String, u64>) {
        let joined = &self.joined;
        self.next.retain(|room, _| {
            wanted
                .get(room)
                .is_some_and(|join| joined.get(room) == Some(join))
        });
        self.joined.retain(|room, _| self.next.contains_key(room));
    }

    /// Subscribes to `rooms`, each for the join given, and catches up:
    /// a room new to the node is told what it said before
    /// ([`Delivery::Recent`]); one it was in gets every line it missed.
    ///
    /// A new room's past ends where its numbering stood *before* the
    /// subscription: whatever is said from then on comes as lines, either
    /// on the channel or read back from the history below, and a line that
    /// comes both ways is dropped the second time. (Read after it, a line
    /// said in between would be told as past to a member who was already
    /// there when it was said.)
    fn subscribe(
        &mut self,
        pubsub: &mut redis::PubSub<'_>,
        query: &mut Connection,
        rooms: &[(&String, u64)],
    ) -> Result<(), SubscriberEnd> {
        if rooms.is_empty() {
            return Ok(());
        }
        let lost =
            |target: &Target, error: RedisError| SubscriberEnd::Lost(target.describe(&error));
        let mut before = HashMap::new();
        for &(room, _) in rooms {
            if !self.next.contains_key(room) {
                let seq = current_seq(query, room).map_err(|error| lost(&self.target, error))?;
                before.insert(room, seq);
            }
        }
        let channels: Vec<String> = rooms.iter().map(|(room, _)| channel(room)).collect();
        pubsub
            .subscribe(channels)
            .map_err(|error| lost(&self.target, error))?;
        for &(room, join) in rooms {
            self.joined.insert(room.clone(), join);
            if let Some(&past) = before.get(room) {
                let recent = self.recent(query, room, past)?;
                self.send(recent)?;
                self.next.insert(room.clone(), past + 1);
            }
            let current = current_seq(query, room).map_err(|error| lost(&self.target, error))?;
            let next = self.next[room];
            if next <= current {
                self.fill(query, room, next, current)?;
            }
        }
        Ok(())
    }

    /// `room`'s last lines up to `current`, and its topic.
    fn recent(
        &self,
        query: &mut Connection,
        room: &str,
        current: u64,
    ) -> Result<Delivery, SubscriberEnd> {
        let keys = Keys::of(room);
        let lost = |error: RedisError| SubscriberEnd::Lost(self.target.describe(&error));
        let count = self.target.settings.recent;
        let mut lines = Vec::new();
        if count > 0 && current > 0 {
            let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
                .arg(&keys.history)
                .arg(format!("{current}-0"))
                .arg("-")
                .arg("COUNT")
                .arg(count)
                .query(query)
                .map_err(lost)?;
            lines = entries
                .into_iter()
                .rev()
                .map(|(_, mut fields)| fields.remove("line").unwrap_or_default())
                .collect();
        }
        let topic: Option<String> = redis::cmd("GET")
            .arg(&keys.topic)
            .query(query)
            .map_err(lost)?;
        Ok(Delivery::Recent {
            room: room.to_owned(),
            lines,
            topic,
        })
    }

    /// A message for this node (`to_us`: `p NAME LINE`, a private line
    /// for a user here, or `r TICKET ANSWER`, an answer to a question of
    /// ours), or a question to all (`RUN TICKET QUESTION`).
    fn on_node_message(&self, to_us: bool, bytes: &[u8]) -> Result<(), SubscriberEnd> {
        // A wake-up (see `RedisLink::join_room`): the loop looks at the rooms.
        if to_us && bytes == b"w" {
            return Ok(());
        }
        let delivery = std::str::from_utf8(bytes).ok().and_then(|text| {
            let (first, rest) = text.split_once(' ')?;
            let (second, rest) = rest.split_once(' ')?;
            Some(match (to_us, first) {
                (true, "p") => Delivery::Private {
                    to: second.to_owned(),
                    line: rest.to_owned(),
                },
                (true, "r") => Delivery::Answer {
                    ticket: second.parse().ok()?,
                    answer: rest.to_owned(),
                },
                (true, _) => return None,
                (false, run) => Delivery::Question {
                    run: run.to_owned(),
                    ticket: second.parse().ok()?,
                    question: rest.to_owned(),
                },
            })
        });
        match delivery {
            Some(delivery) => self.send(delivery),
            None => {
                log::warn!(
                    "redis {}: a malformed message to the node",
                    self.target.addr
                );
                Ok(())
            }
        }
    }

    /// A line arrived on `room`'s channel.
    fn on_message(
        &mut self,
        query: &mut Connection,
        room: &str,
        bytes: &[u8],
    ) -> Result<(), SubscriberEnd> {
        // Not (or no longer) a room of ours: a leftover of a leave.
        let Some(&next) = self.next.get(room) else {
            return Ok(());
        };
        let Some((seq, node, line)) = parse_payload(bytes) else {
            log::warn!("redis {}: room {room}: malformed message", self.target.addr);
            return Ok(());
        };
        if seq < next {
            return Ok(());
        }
        if seq > next {
            self.fill(query, room, next, seq - 1)?;
        }
        self.send(Delivery::Line {
            room: room.to_owned(),
            seq,
            node: node.to_owned(),
            line: line.to_owned(),
        })?;
        self.next.insert(room.to_owned(), seq + 1);
        Ok(())
    }

    /// Delivers lines `from..=to` of `room` from its history, saying which
    /// it no longer has.
    fn fill(
        &mut self,
        query: &mut Connection,
        room: &str,
        from: u64,
        to: u64,
    ) -> Result<(), SubscriberEnd> {
        let history = Keys::of(room).history;
        let mut expected = from;
        while expected <= to {
            let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
                .arg(&history)
                .arg(format!("{expected}-0"))
                .arg(format!("{to}-0"))
                .arg("COUNT")
                .arg(FILL_CHUNK)
                .query(query)
                .map_err(|error| SubscriberEnd::Lost(self.target.describe(&error)))?;
            let done = entries.len() < FILL_CHUNK;
            for (id, fields) in entries {
                let Some(seq) = id.split('-').next().and_then(|seq| seq.parse::<u64>().ok()) else {
                    continue;
                };
                if seq < expected {
                    continue;
                }
                if seq > expected {
                    self.send(Delivery::Missed {
                        room: room.to_owned(),
                        from: expected,
                        to: seq - 1,
                    })?;
                }
                let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
                self.send(Delivery::Line {
                    room: room.to_owned(),
                    seq,
                    node: field("node"),
                    line: field("line"),
                })?;
                expected = seq + 1;
            }
            if done {
                break;
            }
        }
        if expected <= to {
            self.send(Delivery::Missed {
                room: room.to_owned(),
                from: expected,
                to,
            })?;
        }
        self.next.insert(room.to_owned(), to + 1);
        Ok(())
    }

    /// Hands the hub a delivery, waiting while its queue is full (Redis
    /// buffers meanwhile). Fails if the link stops or nobody listens.
    fn send(&self, delivery: Delivery) -> Result<(), SubscriberEnd> {
        let mut delivery = delivery;
        loop {
            match self
                .deliver
                .send_timeout(delivery, self.target.settings.poll)
            {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(back)) if !self.shared.stopping() => delivery = back,
                Err(_) => return Err(SubscriberEnd::Stop),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_room_as_hash_tag() {
        let keys = Keys::of("lobby");
        assert_eq!(keys.seq, "room:{lobby}:seq");
        assert_eq!(keys.history, "room:{lobby}:history");
        assert_eq!(keys.senders, "room:{lobby}:senders");
        assert_eq!(keys.channel, "room:{lobby}");
        assert_eq!(room_of(&keys.channel), Some("lobby"));
        assert_eq!(room_of("other:{lobby}"), None);
        assert_eq!(room_of("room:{lobby"), None);
    }

    #[test]
    fn payload_round_trip() {
        let text = format!("{} {} {}", 42, "node-a", "chat alice hello there\n");
        assert_eq!(
            parse_payload(text.as_bytes()),
            Some((42, "node-a", "chat alice hello there\n"))
        );
        // An empty line is still a line.
        assert_eq!(parse_payload(b"7 b "), Some((7, "b", "")));
        assert_eq!(parse_payload(b"x b line"), None);
        assert_eq!(parse_payload(b"7 b"), None);
        assert_eq!(parse_payload(b"7 b \xff"), None);
    }

    #[test]
    fn node_names() {
        assert!(valid_node_name("eu-1.chat_a"));
        assert!(valid_node_name(&"n".repeat(NODE_NAME_MAX)));
        assert!(!valid_node_name(""));
        assert!(!valid_node_name(&"n".repeat(NODE_NAME_MAX + 1)));
        assert!(!valid_node_name("two words"));
        assert!(!valid_node_name("ünï"));
    }

    #[test]
    fn backoff_doubles_to_the_ceiling_with_jitter() {
        let mut backoff = Backoff::new();
        let mut base = BACKOFF_MIN;
        for round in 0..12u64 {
            let low = backoff.next_with(0);
            backoff.next = base;
            let high = backoff.next_with(1000);
            assert_eq!(low, base.mul_f64(0.75), "round {round}");
            assert_eq!(high, base.mul_f64(1.25), "round {round}");
            base = (base * 2).min(BACKOFF_MAX);
        }
        assert_eq!(backoff.next, BACKOFF_MAX);
        backoff.reset();
        assert!(backoff.next() <= BACKOFF_MIN.mul_f64(1.25));
    }

    #[test]
    fn errors_are_one_line_without_the_password() {
        let settings = LinkSettings::default();
        assert!(matches!(
            Target::new("http://example", &settings),
            Err(LinkError::BadUrl)
        ));
        let target = Target::new("redis://:s3cret@127.0.0.1:1/0", &settings).expect("url");
        assert_eq!(target.addr, "127.0.0.1:1");
        assert!(!format!("{target:?}").contains("s3cret"));
        let error = RedisError::from(io::Error::other("told s3cret"));
        assert!(!target.describe(&error).contains("s3cret"));
        let message = LinkError::BadNodeName("a b".into()).to_string();
        assert!(!message.contains('\n'));
    }
}

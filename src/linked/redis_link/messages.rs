//! What the link and its user say to each other: the settings it starts
//! with, what it delivers, why it refuses a line, and why it cannot start.

// The link's types, constants and helpers, which this part shares.
use super::*;

/// The link's limits and clocks. [`LinkSettings::default`] suits a server.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// How many lines each room's history keeps at most (once over, the
    /// oldest go, down to 15/16 of this and of
    /// [`LinkSettings::history_bytes`]). Bounds what a node can still
    /// fill in after an outage. Lines said together on one node are kept
    /// together and go together: a trim may take up to one such batch
    /// more than needed, and one batch larger than this is kept alone.
    pub history: usize,
    /// How many bytes of lines each room's history keeps at most (as
    /// kept: each line with its length before it): the oldest go first,
    /// whichever of this and [`LinkSettings::history`] is reached first,
    /// a batch at a time as there. (One batch larger than this is still
    /// kept, alone.)
    pub history_bytes: usize,
    /// How long a room's keys (its numbering, history and topic) stay in
    /// Redis once no node has members in it and nobody speaks there: then
    /// Redis forgets the room. Renewed by a node's first line there
    /// (whether or not it has members in the room) and by its lines again
    /// once half of it has gone since, so a quiet room lives between half
    /// of it and all of it after its last line; and three times per span
    /// by each node with members in it.
    pub room_ttl: Duration,
    /// How many lines may wait for the publisher thread; past that,
    /// [`RedisLink::publish`] refuses.
    pub outbox: usize,
    /// How many deliveries may wait in the queue [`RedisLink::start`]
    /// returns before the subscriber waits for room. (A link given its
    /// own [`Sink`] instead, [`RedisLink::open`], waits on that sink's
    /// bound: a chat server's is the hub's queue of events.)
    pub deliveries: usize,
    /// How long the subscriber waits for a message before it looks at
    /// the rooms it should be in, its clock, and whether to stop; on a
    /// cluster, also how long each listening thread reads before it looks
    /// at the subscriptions asked of it and whether to stop.
    pub poll: Duration,
    /// With one Redis, how often the subscriber `PING`s its subscribed
    /// connection, quiet or not. On a cluster, how often the classic
    /// connection's thread `PING`s it; how long a master's listening
    /// connection may stay quiet before its thread subscribes its bell
    /// again (its ping); and how often the subscriber asks whether the
    /// cluster's masters changed.
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
            history_bytes: 1 << 20,
            room_ttl: Duration::from_secs(86_400),
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
    /// Lines of a room this node is in, said on one node and numbered
    /// together: `first`, `first + 1`, ... Per room, seqs come in order,
    /// each once; one that never comes is reported as [`Delivery::Missed`].
    Lines {
        /// The room.
        room: String,
        /// The first line's number in the room, the same on every node.
        first: u64,
        /// The node whose users said them (this one, for our own lines).
        node: String,
        /// The lines, as given to [`RedisLink::publish`], at least one.
        lines: Vec<String>,
    },
    /// What a room had said before this node joined it: its last
    /// [`LinkSettings::recent`] lines (oldest first, as given to
    /// [`RedisLink::publish`]) and its topic. Comes once per
    /// [`RedisLink::join_room`], before any [`Delivery::Lines`] of the room, and
    /// again only if the node joins the room anew.
    Recent {
        /// The room.
        room: String,
        /// Its last lines, oldest first.
        lines: Vec<String>,
        /// Its topic, if one was ever set ([`RedisLink::publish_topic`]).
        topic: Option<String>,
        /// Its rules and their version ([`RedisLink::write_rules`]).
        rules: RulesCopy,
    },
    /// A room's rules as Redis has them now: for a room this node is in,
    /// at the place of their change in its order (once per version), and
    /// each time the link comes back (before the lines missed
    /// meanwhile); for one it is not in, when they change.
    RoomRules {
        /// The room.
        room: String,
        /// Its rules and their version.
        rules: RulesCopy,
    },
    /// The server bans, whole, as given to
    /// [`RedisLink::share_server_bans`] (`None`: none): when one is
    /// shared, and each time the link (re)connects.
    ServerBans(Option<String>),
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
    /// A moderator's act for a user of this node, from any node
    /// ([`RedisLink::send_act`]).
    Act {
        /// The user's name, in lower case.
        to: String,
        /// The act, as given to [`RedisLink::send_act`].
        act: String,
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
    /// Redis numbered this node past [`MAX_NODE_NUMBER`]: its `chat:nodes`
    /// was set by something other than the chat's servers.
    NodeNumber {
        /// Redis' host and port.
        addr: String,
        /// The number it gave.
        number: u64,
    },
    /// Redis is older than the link needs (5.0, for streams; 7.0 for a
    /// cluster, for sharded pub/sub).
    TooOld {
        /// Redis' host and port.
        addr: String,
        /// The version it says it is.
        version: String,
        /// The oldest it may be: 5.0, or 7.0 for a cluster.
        needs: String,
    },
    /// The URL names a node of a Redis Cluster some of whose slots no
    /// master serves (the cluster is down, or not yet made).
    Cluster {
        /// The node's host and port.
        addr: String,
        /// How many masters the cluster has.
        masters: usize,
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
            LinkError::NodeNumber { addr, number } => write!(
                f,
                "Redis at {addr} numbers this server {number}, past the most a guest's name \
                 can hold ({MAX_NODE_NUMBER}): its key {NODES_KEY} was not set by the chat's \
                 servers; delete it while no server uses this Redis"
            ),
            LinkError::TooOld {
                addr,
                version,
                needs,
            } => write!(
                f,
                "Redis at {addr} is version {version}; the chat needs {needs} or newer"
            ),
            LinkError::Cluster { addr, masters } => write!(
                f,
                "Redis at {addr} is a node of a Redis Cluster ({masters} masters) some of \
                 whose hash slots no master serves: is the cluster down, or not yet made?"
            ),
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

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
//! which Redis runs as one atomic step for the lines of one room that
//! wait together (a *batch*, said on this node), does three things (four,
//! when the last sets the room's topic: `SET room:{name}:topic` as well,
//! so that a node joining the room later is told it with the room's last
//! lines, [`Delivery::Recent`]):
//!
//! 1. `INCRBY room:{name}:seq`: the lines' numbers in their room (each
//!    line's *seq*), 1, 2, 3, ...; a batch of n lines takes F..F+n-1. The
//!    same numbers on every node, so every node shows the room's lines in
//!    the same order, whoever said them.
//! 2. `XADD room:{name}:history`: the batch, kept as one entry of a
//!    stream under the id `F-0` (its first seq), so that lines can be
//!    asked for by number; the oldest entries go, whole, once the history
//!    holds more than [`LinkSettings::history`] lines or
//!    [`LinkSettings::history_bytes`] bytes of them (counted in
//!    `room:{name}:lines` and `room:{name}:size`), down to 15/16 of both.
//! 3. `PUBLISH room:{name}`: `F node LINES`, once per batch, to the room's
//!    nodes, each line framed by its length (`scripts.rs` has the format,
//!    and how histories kept a line per entry before are still read).
//!
//! A room's moderation rules are kept beside its lines, in
//! `room:{name}:rules` with a version, and written by a script of their
//! own ([`RedisLink::write_rules`], `rules.rs`) only on the version the
//! change was made on: a node whose copy was stale makes its change again
//! on what Redis has, so no change undoes another it never saw. The room's
//! order gets a marker, `v VERSION`, numbered as a line is: each node in
//! the room reads the rules there, among the lines they hold for (once
//! per version it has not read yet), and again each time its link comes
//! back ([`Delivery::RoomRules`]).
//!
//! Every key of the room but its rules is also given
//! [`LinkSettings::room_ttl`] to live, and each node renews that for the
//! rooms it has members in: a room nobody is in and nobody speaks in is
//! forgotten, so what one guest creates and leaves does not stay in Redis
//! for ever. Its rules live at least as long, and as long as their last
//! ban or mute runs, up to [`rules::RULES_KEPT_MOST`].
//!
//! Because the three happen together, whatever was published can be read
//! back, by number, and numbers have no holes. A node remembers, per room,
//! the next number it expects. A batch is delivered from that number on:
//! its lines below it were delivered already (they came with a fill) and
//! are cut off, so a batch wholly below is dropped; a batch that starts
//! above it means lines were lost on the way, and the missing numbers are
//! read from the history first (from the entry that holds the next
//! number, `XREVRANGE ... COUNT 1`, then `XRANGE` on) and delivered, each
//! batch as one [`Delivery::Lines`]. So every node delivers each line of
//! its rooms exactly once, in number order, its own lines included: a
//! node shows its own users their line when it comes back from Redis, not
//! before, so that they see the order everyone else sees.
//!
//! ## One Redis, or a Redis Cluster
//!
//! The URL names one Redis, or any node of a Redis Cluster (7.0 or newer,
//! for sharded pub/sub: an older one is refused at start, as a Redis older
//! than 5.0 is); the link asks which at start (`INFO cluster`, then
//! `CLUSTER SLOTS`: `slots.rs`). Every key of a room, and its channel,
//! carry the room's name as their hash tag (`room:{name}...`), so a room
//! lives on one master; names are spread over 256 tags of their own
//! (`names.rs`); the few keys of the whole chat (`chat:epoch`,
//! `chat:nodes`, `chat:server-bans`) are single keys. Each command or
//! pipeline goes to the master of its first key's slot, over one
//! connection per master (`route.rs`), and each script call touches one
//! room's keys or one bucket of names, so never more than one slot. A
//! single Redis is the same code with one master that owns every slot.
//!
//! On a cluster, room lines go out with `SPUBLISH` (sharded pub/sub: only
//! the room's master and its replica carry them, where a classic
//! `PUBLISH` would cross every node of the cluster) and the subscriber
//! hears each master's rooms on a connection to that master
//! (`shards.rs`), besides the connection every node shares for private
//! lines, questions and moderation, which stay on classic pub/sub (a few
//! lines). A cluster relays a classic `PUBLISH` to every node, but its
//! count (how many nodes heard a private line or a question) counts only
//! the subscribers of the node that ran it, so every server subscribes and
//! publishes those on one node, the master of the server bans' slot,
//! chosen again after a failover. The publisher
//! sends one pipeline per master. A redirection (`MOVED`), a cluster
//! that says it is down, or a connection lost makes the link read the
//! topology again (at most every 200 ms); a slot half moved (`ASK`) is
//! followed for that command, within a pipeline too (each command that
//! got it is sent again alone), but not within a transaction, which Redis
//! refuses whole: the server bans' update then fails, as it does while
//! the link is down. A script whose keys the move has split between the
//! two nodes gets `TRYAGAIN` instead: the publisher sends its lines again
//! later, and the renewal of the rooms' keys waits for its next round.
//!
//! While one master is out of reach the whole link is down, as it is when
//! the one Redis is, not just that master's rooms: its lines are refused
//! ([`Refused::Down`]) and users are told. A master that hangs (a frozen
//! machine, its connections open and silent) is out of reach too: each
//! master's listening connection is pinged once it has been quiet for
//! [`LinkSettings::ping_every`] (by subscribing to its bell again:
//! `shards.rs`), and one that gives no answer within
//! [`LinkSettings::reply_timeout`] counts as lost. Once its replica has taken
//! over (the link was up again 3.3 s after a master was killed, with a
//! `cluster-node-timeout` of one second) the link connects to the new
//! master, fills every room's gap from its history, and is up again.
//! Replication is asynchronous: the lines a master numbered but had not
//! yet sent its replica are lost with it, and the room's numbering goes
//! back. Nodes go on from the new numbering, without showing the room's
//! past again (see `Subscriber::went_back`); a node that had not received
//! the lost lines never shows them, and nothing tells it they were said.
//!
//! ## When Redis is gone
//!
//! The link notices within seconds: reads fail, or the `PING` sent on the
//! listening connection every [`LinkSettings::ping_every`] (on a cluster,
//! on each of them, a master's when quiet) gets no answer (a
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
//! full, [`RedisLink::publish`] says [`Refused::Full`] at once), which takes
//! up to 512 waiting lines (32 KiB) per round trip (a pipeline) and runs
//! the script once per room among them, not per line: what Redis spends
//! is mostly per call. A line it took is published exactly once, however
//! many times it must retry across reconnects: each carries the node's own
//! count, and a batch sent again skips the counts Redis has seen (a
//! first send is checked by each call's last count: it may run after
//! its own retry).
//! The *subscriber* thread has two connections: one subscribed (a
//! subscribed connection can run nothing but (un)subscribe and `PING`), and
//! one to ask (`GET`, `XRANGE`); on a cluster, one more subscribed per
//! master, and one to ask per master. On a cluster each subscribed
//! connection has a thread of its own (`redis-hear`, `redis-hear-shard`),
//! blocked in its read, that hands what it hears to the subscriber through
//! one bounded queue, and makes the (un)subscriptions the subscriber asks
//! of its connection between reads (a subscription is rung, to end the
//! read at once: a channel of the node's own on each master; a leave, and
//! the end of the session, are taken at the next look, within a poll, the
//! classic thread's within a reply's time): a line waits for no other
//! connection, and a quiet link wakes each thread once a poll. (One Redis needs none:
//! the subscriber blocks in the read of its one subscribed connection.)
//! These threads end with the subscriber's session, which waits for them.
//! It hands each [`Delivery`] itself to the node's [`Sink`]: for a chat
//! server, straight into the hub's bounded queue of events, among the
//! clients' (`Linked::forward`), with no thread between; for
//! [`RedisLink::start`], a queue of [`LinkSettings::deliveries`] whose other
//! end it returns. When the sink is full (the hub is behind) the
//! subscriber waits, looking every [`LinkSettings::poll`] at whether the
//! link stops; Redis buffers for it, and past Redis' limit Redis cuts it
//! off: which the subscriber recovers from like from any outage.
//! The rooms to be in are a set under a lock that no one holds across a
//! network wait; the subscriber looks at it between messages, and at least
//! every [`LinkSettings::poll`].
//!
//! The *directory* thread (`names.rs`) has a connection of its own for
//! nicks, private lines and questions to every node, each asked through
//! a bounded queue too and answered as a [`Delivery`], into the same sink
//! (`outlet.rs`). It renews the names on schedule ahead of whatever else
//! waits for it (`order.rs`), and tells Redis of names held and let go a
//! batch per round trip, so connection churn cannot make the names of
//! connected users lapse. The hub can hold the renewal up, though: while
//! the hub's queue is full, the directory waits there with an answer, and
//! renews nothing meanwhile.
//!
//! ## Names, private lines, questions
//!
//! A nick is claimed in Redis before a user takes it
//! ([`RedisLink::claim_name`]), under a key that holds this node's run and
//! lapses unless the node renews it: a node that dies frees its names by
//! itself. Each node also listens on a channel of its own, `node:{run}`,
//! where private lines for its users arrive ([`RedisLink::send_private`]:
//! looked up and published in one script, in two steps on a cluster), and on `chat:ask`, where any
//! node asks every node something ([`RedisLink::ask_everyone`]: who is in a
//! room, which rooms there are, where someone is). Every node answers for
//! its own users on the asker's channel, and the `PUBLISH` count says how
//! many answers to expect: presence is never stored, so it never goes
//! stale.
//!
//! The password in the URL is used to log in and nowhere else: errors and
//! logs name Redis by its host and port only.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use redis::{Client, Connection, ErrorKind, IntoConnectionInfo, RedisError, Script, Value};

mod connect;
mod figures;
mod hearing;
mod keys;
mod messages;
mod names;
mod order;
mod outlet;
mod publisher;
mod route;
mod rules;
mod schedule;
mod scripts;
mod shards;
mod slots;
mod state;
mod subscriber;

#[cfg(test)]
mod tests;

use connect::{current_seq, epoch, Target};
pub use figures::{DeliveriesTaken, LinkGauges};
use keys::{
    channel, room_of, Keys, ASK_CHANNEL, EPOCH_KEY, MODERATION_CHANNEL, NODES_KEY, SERVER_BANS_KEY,
};
pub use messages::{Delivery, LinkError, LinkSettings, Refused};
use outlet::Outlet;
pub use outlet::Sink;
use publisher::{pause, Publisher};
use rules::RulesWrite;
pub use rules::{merge, RulesCopy, RULES_KEPT_MOST};
use subscriber::Subscriber;

use crate::backoff::Backoff;
use crate::elsewhere::{Claim, Sent};
use crate::metrics::Tally;
use crate::sync;
pub use names::{name_key, NAME_BUCKETS};
use names::{Directory, Errand};
use route::Router;
use schedule::Schedule;
use scripts::{check_version, PUBLISH_SCRIPT, TOUCH_SCRIPT};
use shards::Shards;
use slots::Topology;
use state::{
    frame, millis, parse_payload, random_u64, reconnect_backoff, unframe, valid_node_name, Held,
    LinkState, Outgoing, Rooms, ToPublish,
};

/// The highest number a node may take ([`RedisLink::number`]): a guest's
/// name, `guestN-ID`, must still fit a nick with room for the ID. A
/// higher `chat:nodes` was not made by the chat's servers (a million
/// starts on one data set is far off), and is refused, not trusted.
pub const MAX_NODE_NUMBER: u64 = 999_999;

/// How many history entries one `XRANGE` asks for while filling a gap:
/// a long outage is read in pieces, not all in one reply.
const FILL_CHUNK: usize = 1000;

/// How many holds and releases of names may wait for the directory
/// thread: it takes up to 500 per round trip, so only a Redis that barely
/// answers fills it.
pub const NAMES_QUEUE: usize = 1 << 16;

/// How many rooms' keys one round trip renews ([`TOUCH_SCRIPT`]): a node
/// in thousands of rooms renews them in pieces.
const TOUCH_CHUNK: usize = 256;

/// The shortest wait before reconnecting, doubled after each failure...
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// ... up to this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The longest node name; see [`RedisLink::start`] for the characters allowed.
pub const NODE_NAME_MAX: usize = 64;

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
    outbox: Option<Sender<Outgoing>>,
    /// Work for the directory thread (claims, private lines, questions).
    asks: Option<Sender<Errand>>,
    /// Names held and let go, for the directory thread to tell Redis at
    /// once, a batch per round trip. Only a hurry: `held` is what counts,
    /// so a change that finds this full is told at the next renewal, or
    /// lapses.
    names: Option<Sender<Errand>>,
    /// The names this node holds, shared with the directory thread: what
    /// it renews, whatever became of the queue above.
    held: Held,
    shared: Arc<LinkState>,
    /// Dropped to wake the threads from a wait between reconnections.
    wake: Option<Sender<()>>,
    /// Disconnects when the publisher thread ends: at the drop, once the
    /// outbox is empty.
    published: Option<Receiver<()>>,
    /// [`LinkSettings::reply_timeout`]: how long the drop waits for that.
    reply_timeout: Duration,
    /// Where the subscriber and the directory hand what they deliver.
    outlet: Arc<Outlet>,
    /// What the link had to say at start (the server bans, if Redis
    /// had any), for the sink before anything else
    /// ([`RedisLink::deliver_to`]).
    first: Option<Delivery>,
    threads: Vec<JoinHandle<()>>,
}

impl RedisLink {
    /// Connects to Redis at `url` as node `node` and starts the link's
    /// three threads; what they deliver comes out of the receiver, which
    /// holds up to [`LinkSettings::deliveries`]. [`RedisLink::open`] does
    /// the same without the queue.
    ///
    /// `url` is `redis://[[user]:password@]host[:port][/db]`, or
    /// `rediss://` for TLS (Redis' certificate must chain to the system's
    /// roots, or to [`LinkSettings::ca_file`], and name the host). `node` is
    /// 1 to [`NODE_NAME_MAX`] ASCII letters, digits, `.`, `_` or `-`.
    ///
    /// Fails, with a one-line [`LinkError`], unless Redis answers, accepts
    /// the login and the script now, and is 5.0 or newer (if it says): a server started with a wrong
    /// `--redis` should say so at once, not retry in the background.
    /// Once started, the link never gives up.
    pub fn start(
        url: &str,
        node: &str,
        settings: LinkSettings,
    ) -> Result<(RedisLink, Receiver<Delivery>), LinkError> {
        let (deliver, deliveries) = crossbeam_channel::bounded(settings.deliveries.max(1));
        let mut link = RedisLink::open(url, node, settings)?;
        // A link just opened has no sink yet.
        link.deliver_to(Box::new(deliver));
        Ok((link, deliveries))
    }

    /// Like [`RedisLink::start`], but what the link delivers goes to the
    /// [`Sink`] given later ([`RedisLink::deliver_to`]); until then its
    /// threads hold their first delivery, and Redis buffers for them.
    pub fn open(url: &str, node: &str, settings: LinkSettings) -> Result<RedisLink, LinkError> {
        if !valid_node_name(node) {
            return Err(LinkError::BadNodeName(node.to_owned()));
        }
        let target = Arc::new(Target::new(url, &settings)?);
        let fail = |error: RedisError| target.start_error(&error);
        let mut first = target.connect().map_err(fail)?;
        check_version(&target, &mut first, scripts::OLDEST_REDIS)?;
        // A Redis that will not say (an ACL user not allowed `INFO`) is
        // taken as one: on a cluster its first key of another slot fails.
        let topology = match Topology::read(&mut first, &target.addr) {
            Ok(topology) => topology,
            Err(error) => {
                log::debug!(
                    "Redis at {} did not say whether it is a cluster: {}",
                    target.addr,
                    target.describe(&error)
                );
                Topology::single(&target.addr)
            }
        };
        if topology.is_cluster() && !topology.covers_every_slot() {
            return Err(LinkError::Cluster {
                addr: target.addr.clone(),
                masters: topology.shards(),
            });
        }
        if topology.is_cluster() {
            check_version(&target, &mut first, scripts::OLDEST_CLUSTER)?;
        }
        let router = |first| Router::new(Arc::clone(&target), topology.clone(), first);
        let mut query = router(Some(first));
        let mut publish = router(Some(target.connect().map_err(fail)?));
        let listen = target.listening(&topology).map_err(fail)?;
        let directory_connection = router(Some(target.connect().map_err(fail)?));
        let script = Script::new(PUBLISH_SCRIPT);
        script.load(&mut publish).map_err(fail)?;
        let rules_script = Script::new(rules::RULES_SCRIPT);
        rules_script.load(&mut publish).map_err(fail)?;
        let first_epoch = epoch(&mut query).map_err(fail)?;
        // Before anyone can connect here, so that they already hold.
        let server_bans: Option<String> = redis::cmd("GET")
            .arg(SERVER_BANS_KEY)
            .query(&mut query)
            .map_err(fail)?;
        let number: u64 = redis::cmd("INCR")
            .arg(NODES_KEY)
            .query(&mut query)
            .map_err(fail)?;
        if number > MAX_NODE_NUMBER {
            return Err(LinkError::NodeNumber {
                addr: target.addr.clone(),
                number,
            });
        }

        let shared = Arc::new(LinkState::new(number));
        let (outbox, outgoing) = crossbeam_channel::bounded(settings.outbox.max(1));
        let outlet = Arc::new(Outlet::new(Arc::clone(&shared), settings.poll));
        let first = server_bans
            .is_some()
            .then(|| Delivery::ServerBans(server_bans.clone()));
        let (wake, woken) = crossbeam_channel::bounded::<()>(0);
        let (ask, asks) = crossbeam_channel::bounded(settings.outbox.max(1));
        let (name_changes, names_changed) = crossbeam_channel::bounded(NAMES_QUEUE);
        let run = format!("{node}/{:016x}", random_u64());
        let held = Held::default();
        let directory = Directory {
            target: Arc::clone(&target),
            shared: Arc::clone(&shared),
            deliver: Arc::clone(&outlet),
            run: run.clone(),
            held: Arc::clone(&held),
            schedule: Schedule::new(settings.name_ttl, settings.reply_timeout, Instant::now()),
        };

        let (publishing, published) = crossbeam_channel::bounded::<()>(0);
        let publisher = Publisher {
            _publishing: publishing,
            target: Arc::clone(&target),
            shared: Arc::clone(&shared),
            woken: woken.clone(),
            script,
            rules_script,
            node: node.to_owned(),
            publish_command: if topology.is_cluster() {
                "SPUBLISH"
            } else {
                "PUBLISH"
            },
            sender: run.clone(),
            count: 0,
            renewed: HashMap::new(),
        };
        let subscriber = Subscriber {
            target,
            shared: Arc::clone(&shared),
            woken,
            deliver: Arc::clone(&outlet),
            epoch: first_epoch,
            own_channel: names::node_channel(&run),
            names: name_changes.clone(),
            next: HashMap::new(),
            joined: HashMap::new(),
            rules_seen: HashMap::new(),
            down_since: None,
            touch_script: Script::new(TOUCH_SCRIPT),
            server_bans,
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
            held,
            published: Some(published),
            reply_timeout: settings.reply_timeout,
            shared,
            wake: Some(wake),
            outlet,
            first,
            threads,
        };
        Ok(link)
    }

    /// Hands `line` of `room` to Redis, without waiting: it is queued for
    /// the publisher thread, and comes back in a [`Delivery::Lines`] (on
    /// every node in the room, this one included) once Redis has it.
    /// The line may hold any text: the link frames it, so that nothing
    /// in it can run into the next.
    ///
    /// Refuses at once, and the line goes nowhere, when
    /// [`LinkSettings::outbox`] lines already wait ([`Refused::Full`]) or
    /// Redis is unreachable ([`Refused::Down`]). A line taken while the
    /// link was up but that could not yet reach Redis when it went down
    /// is published when it comes back.
    pub fn publish(&self, room: &str, line: &str) -> Result<(), Refused> {
        self.send(Outgoing::Line(ToPublish {
            room: room.to_owned(),
            line: line.to_owned(),
            topic: None,
        }))
    }

    /// Like [`RedisLink::publish`], for a line that also sets the room's topic:
    /// kept in Redis with the line, in the same atomic step, so that a
    /// node joining the room later finds it ([`Delivery::Recent`]).
    pub fn publish_topic(&self, room: &str, line: &str, topic: &str) -> Result<(), Refused> {
        self.send(Outgoing::Line(ToPublish {
            room: room.to_owned(),
            line: line.to_owned(),
            topic: Some(topic.to_owned()),
        }))
    }

    /// Writes a change of `room`'s rules: `rules`, whole (`None`: none),
    /// made on the copy `base` (the default for none known), on that
    /// version only; if Redis has another, the change is made again on
    /// it ([`merge`]), until it is in or changes nothing. Every node in the
    /// room reads the rules at the marker this puts in its order
    /// ([`Delivery::RoomRules`]); every other node hears the new version.
    /// Refuses as [`RedisLink::publish`] does; goes after the lines given
    /// before it.
    pub fn write_rules(
        &self,
        room: &str,
        base: &RulesCopy,
        rules: Option<&str>,
    ) -> Result<(), Refused> {
        self.send(Outgoing::Rules(RulesWrite {
            room: room.to_owned(),
            base: base.clone(),
            rules: rules.map(str::to_owned),
        }))
    }

    /// Shares the server bans, whole (`None`: there are none): kept in
    /// Redis, and told to every node ([`Delivery::ServerBans`]), this one
    /// included.
    pub fn share_server_bans(&self, bans: Option<&str>) -> Result<(), Refused> {
        self.ask(Errand::ServerBans(bans.unwrap_or_default().to_owned()))
    }

    fn send(&self, outgoing: Outgoing) -> Result<(), Refused> {
        if !self.shared.up.load(Ordering::SeqCst) {
            return Err(Refused::Down);
        }
        let Some(outbox) = &self.outbox else {
            return Err(Refused::Down);
        };
        match outbox.try_send(outgoing) {
            Ok(()) => {
                self.shared.outbox_in.add(1);
                Ok(())
            }
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
        // The subscriber sits in a read (on a cluster, a wait for its
        // listening threads) of up to a poll; a message on its own channel
        // ends it at once. (On a cluster, it then rings the listening
        // thread of the room's master, which subscribes at once.)
        let _ = self.ask(Errand::Wake);
    }

    /// The node has no one left in `room`: stop hearing it. Lines of the
    /// room still on their way are dropped.
    pub fn leave_room(&self, room: &str) {
        self.change_rooms(|rooms| rooms.wanted.remove(room).is_some());
    }

    fn change_rooms(&self, change: impl FnOnce(&mut Rooms) -> bool) {
        let mut rooms = sync::lock(&self.shared.rooms);
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
        self.ask(Errand::Claim(name.to_owned()))
    }

    /// Holds `name` (in lower case) for a user of this node from now on,
    /// without an answer: for a name no other node gives out (a guest's,
    /// `guestN-ID` with this node's [`RedisLink::number`]) or that a
    /// certificate proves. It is claimed as soon as Redis can be reached;
    /// should another node have it, [`Delivery::NameLost`] says so.
    /// (When [`NAMES_QUEUE`] changes already wait, it is claimed at the
    /// next renewal, within a third of the names' expiry.)
    pub fn hold_name(&self, name: &str) {
        sync::lock(&self.held).insert(name.to_owned());
        if let Some(names) = &self.names {
            // Full: claimed at the next renewal instead.
            let _ = names.try_send(Errand::Hold(name.to_owned()));
        }
    }

    /// Lets `name` go, if this node still holds it: Redis is told at
    /// once. It is no longer renewed either, so when Redis cannot be told
    /// (the link is down, or [`NAMES_QUEUE`] changes already wait) the
    /// release is dropped and the name lapses within the names' expiry.
    pub fn release_name(&self, name: &str) {
        sync::lock(&self.held).remove(name);
        if let Some(names) = &self.names {
            // Full: no longer renewed, it lapses instead.
            let _ = names.try_send(Errand::Release(name.to_owned()));
        }
    }

    /// Sends `line` to whoever holds `to` (in lower case), on whichever
    /// node: it comes out there as [`Delivery::Private`], and the answer
    /// here as [`Delivery::PrivateSent`] with `ticket`.
    pub fn send_private(&self, ticket: u64, to: &str, line: &str) -> Result<(), Refused> {
        self.ask(Errand::Private {
            ticket,
            kind: "p",
            to: to.to_owned(),
            line: line.to_owned(),
        })
    }

    /// Sends a moderator's act (`act`, one line) to whoever holds `to`
    /// (in lower case), as [`RedisLink::send_private`] sends a line: it
    /// comes out there as [`Delivery::Act`], and the answer here as
    /// [`Delivery::PrivateSent`] with `ticket`.
    pub fn send_act(&self, ticket: u64, to: &str, act: &str) -> Result<(), Refused> {
        self.ask(Errand::Private {
            ticket,
            kind: "m",
            to: to.to_owned(),
            line: act.to_owned(),
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
        self.ask(Errand::Everyone {
            ticket,
            question: question.to_owned(),
        })
    }

    /// Answers a [`Delivery::Question`] of node `run`.
    pub fn reply(&self, run: &str, ticket: u64, answer: &str) {
        let reply = Errand::Reply {
            run: run.to_owned(),
            ticket,
            answer: answer.to_owned(),
        };
        if self.ask(reply).is_err() {
            log::debug!("an answer to {run} could not go");
        }
    }

    fn ask(&self, ask: Errand) -> Result<(), Refused> {
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

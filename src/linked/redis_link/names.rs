//! Names and private messages across nodes: the link's third thread, the
//! *directory*.
//!
//! A nick is one person's on every node at once. Redis holds who has it:
//! the key [`name_key`] (`name:{bK}:nick`, the nick in lower case) holds the
//! [run](super::RedisLink::run) of the node whose user has it, and expires
//! after [`LinkSettings::name_ttl`](super::LinkSettings::name_ttl) unless that
//! node renews it. A node that crashes stops renewing, and its names come
//! free by themselves within that time.
//!
//! The names are spread over [`NAME_BUCKETS`] hash tags (`{b0}` ... by the
//! nick's CRC16), so that on a Redis Cluster a renewal of many names is one
//! script per bucket, each over keys of one slot (a script's keys must
//! share one), one round trip per master: at most [`NAME_BUCKETS`] calls,
//! however many names, rather than one per name. One Redis takes up to
//! [`RENEW_CHUNK`] names of any buckets per call.
//!
//! Every change is one Lua script, which Redis runs as one atomic step:
//!
//! - [`CLAIM_SCRIPT`] takes each name given that is free or already this
//!   run's, and renews it. The same script claims a new name, renews
//!   every held name a few times per expiry, and takes them all back
//!   after an outage; a name someone else took meanwhile is reported lost.
//! - [`RELEASE_SCRIPT`] frees a name only if this run still holds it:
//!   compare, then delete, so a node never frees a name that lapsed and
//!   is now someone else's.
//! - [`PRIVATE_SCRIPT`] looks a name up and publishes a private line on
//!   its holder's node channel, `node:{run}`, in the same step: nothing
//!   can change hands in between. Not on a cluster: there the name's
//!   bucket has its master and the node channels theirs (the classic
//!   pub/sub's, [`Topology::classic`]), so the name is read (`GET`), then
//!   the line published, two steps. A name that changes hands between
//!   them sends the line to its former holder's node, where that user
//!   is gone, while the sender is told it went: what a line sent a
//!   moment before the change would meet too. One name's change racing
//!   one line is all that is lost; every other case answers as before.
//!
//! The thread takes its work ([`Errand`]) from two bounded queues, one of
//! claims, private lines and questions, one of names held and let go (one
//! per arrival or departure, told Redis a batch per round trip), in the
//! order [`Order`] keeps, and answers through the link's deliveries, so the
//! hub never waits for Redis here either.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use redis::{ErrorKind, FromRedisValue, RedisError, RedisResult, Script, ServerErrorKind};

use super::order::{Closed, Order, Queues, Step};
use super::outlet::Outlet;
use super::route::Router;
use super::schedule::Schedule;
use super::slots::crc16;
use super::slots::Topology;
use super::{millis, reconnect_backoff, Delivery, Held, LinkState, Target};
use crate::elsewhere::{Claim, Sent};
use crate::sync;

/// Takes or renews names. KEYS: `name:` keys; ARGV: this run, the expiry
/// in milliseconds. Returns, per key, 1 if the run holds it now, 0 if
/// another run does.
pub(super) const CLAIM_SCRIPT: &str = r"
local held = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == false or holder == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
";

/// Frees each name given that this run holds. KEYS: their `name:` keys;
/// ARGV: this run. Returns how many it freed.
pub(super) const RELEASE_SCRIPT: &str = r"
local freed = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    freed = freed + redis.call('DEL', key)
  end
end
return freed
";

/// Sends a private line to a name's holder. KEYS: its `name:` key;
/// ARGV: the payload (`name line`). Returns how many nodes heard it: -1
/// if nobody holds the name, 0 if its holder's node is not listening
/// (gone, its names not yet lapsed).
pub(super) const PRIVATE_SCRIPT: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  return -1
end
return redis.call('PUBLISH', 'node:' .. holder, ARGV[1])
";

/// The most names one renewal (or the release of all at stop) asks for in
/// one script: a node with tens of thousands of users renews them in
/// pieces, none of which holds Redis up for long.
const RENEW_CHUNK: usize = 500;

/// How many hash tags the names are spread over: few enough that one
/// renewal is a round trip of at most this many scripts, enough that the
/// names spread over every master of a cluster.
pub const NAME_BUCKETS: u16 = 256;

/// The key Redis holds `name` (in lower case) under:
/// `name:{bK}:NAME`, K its bucket, CRC16 of the name modulo
/// [`NAME_BUCKETS`]. The braces are the Redis Cluster hash tag: the
/// names of one bucket share a slot.
pub fn name_key(name: &str) -> String {
    format!("name:{{b{}}}:{name}", bucket(name))
}

/// `name`'s bucket: which of the [`NAME_BUCKETS`] hash tags it is kept under.
fn bucket(name: &str) -> u16 {
    crc16(name.as_bytes()) % NAME_BUCKETS
}

/// `names` in groups one script call may take: at most [`RENEW_CHUNK`]
/// names each, and on a cluster (`one_slot_each`) of one bucket each, so
/// of one slot. One Redis takes any names in one call, so there they go
/// in chunks as they come: a renewal of 500 names is one call, not one
/// per bucket.
pub(super) fn by_bucket<'a>(
    names: impl IntoIterator<Item = &'a String>,
    one_slot_each: bool,
) -> Vec<Vec<&'a String>> {
    let names: Vec<&String> = names.into_iter().collect();
    if !one_slot_each {
        return names.chunks(RENEW_CHUNK).map(<[&String]>::to_vec).collect();
    }
    let mut buckets: BTreeMap<u16, Vec<&String>> = BTreeMap::new();
    for name in names {
        buckets.entry(bucket(name)).or_default().push(name);
    }
    buckets
        .into_values()
        .flat_map(|names| {
            names
                .chunks(RENEW_CHUNK)
                .map(<[&String]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs `script` once per group of names (its keys: their [`name_key`]s;
/// then `args`), one pipeline per master (on one Redis, one); the
/// replies, a group's each, in the groups' order. A Redis that forgot the script (restarted, flushed) has it
/// loaded and the calls sent again: none of them ran.
fn per_bucket<T: FromRedisValue>(
    open: &mut Router,
    script: &Script,
    groups: &[Vec<&String>],
    args: &[&str],
) -> RedisResult<Vec<T>> {
    let mut by_shard: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (index, group) in groups.iter().enumerate() {
        let Some(first) = group.first() else {
            continue;
        };
        let shard = open.shard_of(&name_key(first))?;
        by_shard.entry(shard).or_default().push(index);
    }
    let mut replies: Vec<Option<T>> = groups.iter().map(|_| None).collect();
    for indices in by_shard.values() {
        let mut pipe = redis::pipe();
        for &index in indices {
            let group = &groups[index];
            pipe.cmd("EVALSHA").arg(script.get_hash()).arg(group.len());
            for name in group {
                pipe.arg(name_key(name));
            }
            for arg in args {
                pipe.arg(*arg);
            }
        }
        let answered: Vec<T> = match pipe.query(open) {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                script.load(open)?;
                pipe.query(open)
            }
            done => done,
        }?;
        for (&index, reply) in indices.iter().zip(answered) {
            replies[index] = Some(reply);
        }
    }
    Ok(replies.into_iter().flatten().collect())
}

/// The channel a node hears private lines for its users on.
pub(super) fn node_channel(run: &str) -> String {
    format!("node:{run}")
}

/// Work for the directory thread: an errand to run against Redis (not to
/// be confused with the chat's [`Ask`](crate::elsewhere::Ask), which the
/// hub's side of the link turns into these).
#[derive(Debug)]
pub(super) enum Errand {
    Claim(String),
    Hold(String),
    Release(String),
    /// A line for a user of whichever node holds the name: a private
    /// line (`kind` `p`) or a moderator's act (`m`).
    Private {
        ticket: u64,
        kind: &'static str,
        to: String,
        line: String,
    },
    /// A question for every node (see [`super::RedisLink::ask_everyone`]).
    Everyone {
        ticket: u64,
        question: String,
    },
    /// Redis is back (the subscriber says so): take every held name back
    /// now, not at the next renewal.
    Renew,
    /// Wakes this node's subscriber, which then looks at the rooms it
    /// should be in at once rather than at its next poll.
    Wake,
    /// The server bans, whole (empty: none), to keep and tell every
    /// node (see [`super::RedisLink::share_server_bans`]).
    ServerBans(String),
    /// This node's answer to another's question.
    Reply {
        run: String,
        ticket: u64,
        answer: String,
    },
}

/// The directory thread: one connection of its own, the names this run
/// holds, and their renewal clock.
pub(super) struct Directory {
    pub(super) target: Arc<Target>,
    pub(super) shared: Arc<LinkState>,
    pub(super) deliver: Arc<Outlet>,
    pub(super) run: String,
    /// The names this run holds, in lower case: the hub's to change
    /// ([`super::RedisLink::hold_name`]), this thread's to tell Redis.
    pub(super) held: Held,
    /// When the names are renewed, and when questions' answers are due.
    pub(super) schedule: Schedule,
}

/// A failed exchange with Redis; the connection is dropped for a new one.
struct Lost;

impl Directory {
    pub(super) fn run(
        mut self,
        asks: Receiver<Errand>,
        names: Receiver<Errand>,
        connection: Router,
    ) {
        let seeds = connection.topology().clone();
        let scripts = Scripts {
            claim: Script::new(CLAIM_SCRIPT),
            release: Script::new(RELEASE_SCRIPT),
            private: Script::new(PRIVATE_SCRIPT),
        };
        let mut connection = Some(connection);
        let mut backoff = reconnect_backoff();
        let mut queues = Inboxes {
            asks: &asks,
            names: &names,
        };
        // Renewals, holds and releases, and asks, in the order whose
        // promises `Order` keeps.
        let mut order = Order::new(RENEW_CHUNK);
        loop {
            if self.shared.stopping() {
                break;
            }
            if connection.is_none() {
                match self.reopen(&seeds) {
                    Ok(fresh) => {
                        connection = Some(fresh);
                        backoff.reset();
                        // After each reconnection every held name is
                        // taken back at once.
                        self.schedule.renew_now(Instant::now());
                    }
                    Err(_) => {
                        if let Some(ask) = order.take_put_back() {
                            self.settle(ask, Err(Lost));
                        }
                        if self.answer_down(&asks, &names, &mut order, backoff.next_wait()) {
                            return;
                        }
                        continue;
                    }
                }
            }
            let Some(open) = connection.as_mut() else {
                continue;
            };
            if !self.time_out() {
                break;
            }
            let now = Instant::now();
            let wait = self.schedule.wait(now, self.target.settings.poll);
            let ask = match order.next(&mut queues, self.schedule.renewal_due(now), wait) {
                Step::Renew => {
                    if self.renew(open, &scripts).is_err() {
                        connection = None;
                    } else {
                        self.schedule.renewed(Instant::now());
                    }
                    continue;
                }
                Step::Changes(changes) => {
                    if self.change(open, &scripts, changes).is_err() {
                        connection = None;
                    }
                    continue;
                }
                Step::Idle => continue,
                Step::Closed => break,
                Step::Ask(ask) => ask,
            };
            let answer = match self.ask_redis(open, &scripts, &ask) {
                Ok(answer) => Ok(answer),
                // A reply that did not come in time: Redis may have done
                // it, so it is not done again (a question or a private
                // line would go twice).
                Err(error) if error.is_timeout() => {
                    connection = None;
                    Err(self.log(&error))
                }
                // Most often a connection Redis closed when it restarted,
                // noticed only now: one more try, on a new one.
                Err(error) => {
                    let _ = self.log(&error);
                    connection = None;
                    match self.reopen(&seeds) {
                        Ok(mut fresh) => {
                            let again = self.ask_redis(&mut fresh, &scripts, &ask);
                            if again.is_ok() {
                                connection = Some(fresh);
                                self.schedule.renew_now(Instant::now());
                            }
                            again.map_err(|error| self.log(&error))
                        }
                        Err(error) => Err(self.log(&error)),
                    }
                }
            };
            self.settle(ask, answer);
        }
        // Stopping: the names go now rather than when they lapse, so a
        // user reconnecting elsewhere gets theirs back at once.
        if let Some(open) = connection.as_mut() {
            let names: Vec<String> = std::mem::take(&mut *sync::lock(&self.held))
                .into_iter()
                .collect();
            let groups = by_bucket(&names, open.topology().is_cluster());
            // Not told: they lapse instead.
            let _ = per_bucket::<i64>(open, &scripts.release, &groups, &[&self.run]);
        }
    }

    /// New connections, over the topology as the cluster tells it now
    /// (`seeds`: where to ask), and one that answers.
    fn reopen(&self, seeds: &Topology) -> RedisResult<Router> {
        let mut fresh = Router::new(Arc::clone(&self.target), seeds.clone(), None);
        fresh.read_again(true);
        redis::cmd("PING").exec(&mut fresh)?;
        Ok(fresh)
    }

    /// Says [`Delivery::AskTimedOut`] for each question whose answers are
    /// due. False if nobody takes deliveries any more.
    fn time_out(&mut self) -> bool {
        let now = Instant::now();
        while let Some(ticket) = self.schedule.due(now) {
            if !self.send(Delivery::AskTimedOut { ticket }) {
                return false;
            }
        }
        true
    }

    /// Redis is unreachable: waits `wait` before the next try, noting
    /// holds and releases meanwhile, and answering asks at once with
    /// "down" (a Redis that hangs must not make each ask wait for a
    /// connection attempt). The subscriber saying Redis is back (`Renew`)
    /// cuts the wait short. True if the link is stopping.
    fn answer_down(
        &mut self,
        asks: &Receiver<Errand>,
        names: &Receiver<Errand>,
        order: &mut Order<Errand>,
        wait: Duration,
    ) -> bool {
        let until = Instant::now() + wait;
        loop {
            if self.shared.stopping() {
                return true;
            }
            if self.back_up(names) {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if !self.time_out() {
                return true;
            }
            match asks.recv_timeout(left.min(self.target.settings.poll)) {
                // The subscriber says Redis is back before it tells the
                // hub, so an ask made on hearing the link is up can come
                // while this waits: it is tried on the new connection,
                // after the renewal, not answered "down".
                Ok(ask) if self.back_up(names) => {
                    order.put_back_first(ask);
                    return false;
                }
                Ok(ask) => self.settle(ask, Err(Lost)),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return true,
            }
        }
    }

    /// Takes the holds and releases waiting, and drops them: a hold is in
    /// `held` already, so Redis hears of it at the renewal after the
    /// reconnection; a released name is in `held` no more, so it is not
    /// renewed and lapses. True if the subscriber said Redis is back among
    /// them.
    fn back_up(&mut self, names: &Receiver<Errand>) -> bool {
        while let Ok(change) = names.try_recv() {
            if let Errand::Renew = change {
                return true;
            }
        }
        false
    }

    /// Runs the script `ask` calls for: for a claim, 1 if the name is
    /// this run's now; for a private line, how many nodes heard it.
    fn ask_redis(
        &self,
        open: &mut Router,
        scripts: &Scripts,
        ask: &Errand,
    ) -> Result<i64, RedisError> {
        let ttl = millis(self.target.settings.name_ttl);
        match ask {
            Errand::Claim(name) | Errand::Hold(name) => {
                let held: Vec<i64> = scripts
                    .claim
                    .key(name_key(name))
                    .arg(&self.run)
                    .arg(ttl)
                    .invoke(open)?;
                Ok(held.first().copied().unwrap_or(0))
            }
            Errand::Release(name) => scripts
                .release
                .key(name_key(name))
                .arg(&self.run)
                .invoke(open),
            Errand::Private { to, line, kind, .. } if open.topology().is_cluster() => {
                // The name's bucket and the node channels live on different
                // masters, so no one script can do both (see the module doc).
                let holder: Option<String> = redis::cmd("GET").arg(name_key(to)).query(open)?;
                match holder {
                    None => Ok(-1),
                    Some(holder) => redis::cmd("PUBLISH")
                        .arg(node_channel(&holder))
                        .arg(format!("{kind} {to} {line}"))
                        .query(open),
                }
            }
            Errand::Private { to, line, kind, .. } => scripts
                .private
                .key(name_key(to))
                .arg(format!("{kind} {to} {line}"))
                .invoke(open),
            Errand::Everyone { ticket, question } => redis::cmd("PUBLISH")
                .arg(super::ASK_CHANNEL)
                .arg(format!("{} {ticket} {question}", self.run))
                .query(open),
            // Never sent to Redis: the run loop renews instead.
            Errand::Renew => Ok(0),
            // Kept and told in one step: a node that reads the key after
            // subscribing misses no change.
            Errand::ServerBans(bans) => {
                let mut pipe = redis::pipe();
                pipe.atomic();
                if bans.is_empty() {
                    pipe.cmd("DEL").arg(super::SERVER_BANS_KEY);
                } else {
                    pipe.cmd("SET").arg(super::SERVER_BANS_KEY).arg(bans);
                }
                pipe.cmd("PUBLISH")
                    .arg(super::MODERATION_CHANNEL)
                    .arg(format!("s {bans}"));
                pipe.exec(open).map(|()| 0)
            }
            Errand::Wake => redis::cmd("PUBLISH")
                .arg(node_channel(&self.run))
                .arg("w")
                .query(open),
            Errand::Reply {
                run,
                ticket,
                answer,
            } => redis::cmd("PUBLISH")
                .arg(node_channel(run))
                .arg(format!("r {ticket} {answer}"))
                .query(open),
        }
    }

    /// Tells the hub what became of `ask`: `answer` is what
    /// [`Directory::ask_redis`] returned, `Err` if Redis could not be
    /// asked.
    fn settle(&mut self, ask: Errand, answer: Result<i64, Lost>) {
        let delivery = match (ask, answer) {
            (Errand::Claim(name), Ok(1)) => {
                sync::lock(&self.held).insert(name.clone());
                Delivery::Claimed {
                    name,
                    claim: Claim::Ours,
                }
            }
            (Errand::Claim(name), Ok(_)) => Delivery::Claimed {
                name,
                claim: Claim::Taken,
            },
            (Errand::Claim(name), Err(Lost)) => Delivery::Claimed {
                name,
                claim: Claim::Down,
            },
            // Told Redis in batches (`change`), never asked one by one.
            (Errand::Hold(_) | Errand::Release(_), _) => return,
            // The asker waits for the answers only so long; the
            // subscriber looks at its rooms at its next poll anyway.
            (Errand::Reply { .. } | Errand::Wake | Errand::Renew, _) => return,
            (Errand::ServerBans(_), Ok(_)) => return,
            (Errand::ServerBans(_), Err(Lost)) => {
                log::warn!(
                    "the server bans could not be shared: they hold on this server only \
                     until changed again"
                );
                return;
            }
            (Errand::Everyone { ticket, .. }, answer) => {
                if answer.is_ok() {
                    self.schedule.asked(ticket, Instant::now());
                }
                Delivery::Asked {
                    ticket,
                    nodes: answer.ok().and_then(|n| usize::try_from(n).ok()),
                }
            }
            (Errand::Private { ticket, .. }, answer) => Delivery::PrivateSent {
                ticket,
                sent: match answer {
                    Ok(heard) if heard > 0 => Sent::Delivered,
                    Ok(_) => Sent::NoOne,
                    Err(Lost) => Sent::Down,
                },
            },
        };
        self.send(delivery);
    }

    /// Hands the hub a delivery, waiting while its queue is full, but not
    /// past the link's stop (the hub may have stopped reading). False if
    /// it could not.
    fn send(&self, delivery: Delivery) -> bool {
        let sent = self.deliver.send(delivery);
        if sent {
            self.shared.delivered_names.add(1);
        }
        sent
    }

    /// Tells Redis of holds and releases, one script per group of names
    /// ([`by_bucket`]) and one round trip per master, not one per name:
    /// arrivals and departures faster
    /// than round trips must not pile up. What counts for each name is
    /// whether `held` has it now (a hold then a release is a release, and
    /// so is a hold whose release did not fit the queue).
    fn change(
        &mut self,
        open: &mut Router,
        scripts: &Scripts,
        changes: Vec<Errand>,
    ) -> Result<(), Lost> {
        let mut names = BTreeSet::new();
        for change in changes {
            match change {
                Errand::Hold(name) | Errand::Release(name) => {
                    names.insert(name);
                }
                Errand::Renew => self.schedule.renew_now(Instant::now()),
                _ => {}
            }
        }
        let (holds, releases): (Vec<String>, Vec<String>) = {
            let held = sync::lock(&self.held);
            names.into_iter().partition(|name| held.contains(name))
        };
        let groups = by_bucket(&releases, open.topology().is_cluster());
        per_bucket::<i64>(open, &scripts.release, &groups, &[&self.run])
            .map_err(|error| self.log(&error))?;
        self.claim_all(open, scripts, &holds, false)
    }

    /// Takes back, and renews, every name held; each one another run took
    /// meanwhile (it lapsed during an outage) is reported lost.
    fn renew(&mut self, open: &mut Router, scripts: &Scripts) -> Result<(), Lost> {
        let names: Vec<String> = sync::lock(&self.held).iter().cloned().collect();
        self.claim_all(open, scripts, &names, true)
    }

    /// Claims (or renews) `names`, each already in `held`; each one
    /// another run has is reported lost (`lapsed`: this run had it
    /// before, and it lapsed while Redis was out of reach).
    fn claim_all(
        &mut self,
        open: &mut Router,
        scripts: &Scripts,
        names: &[String],
        lapsed: bool,
    ) -> Result<(), Lost> {
        let ttl = millis(self.target.settings.name_ttl).to_string();
        let groups = by_bucket(names, open.topology().is_cluster());
        let replies: Vec<Vec<i64>> = per_bucket(open, &scripts.claim, &groups, &[&self.run, &ttl])
            .map_err(|error| self.log(&error))?;
        for (group, held) in groups.iter().zip(replies) {
            for (name, held) in group.iter().copied().zip(held) {
                if held == 0 {
                    if lapsed {
                        log::warn!(
                            "name {name} lapsed while Redis was away, and is someone else's now"
                        );
                    }
                    sync::lock(&self.held).remove(name);
                    let lost = Delivery::NameLost {
                        name: name.clone(),
                        lapsed,
                    };
                    if !self.send(lost) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    fn log(&self, error: &RedisError) -> Lost {
        log::debug!(
            "redis {}: names: {}",
            self.target.addr,
            self.target.describe(error)
        );
        Lost
    }
}

/// The directory's two queues, as [`Order`] reads them: the holds and
/// releases (`names`), and the asks.
struct Inboxes<'a> {
    asks: &'a Receiver<Errand>,
    names: &'a Receiver<Errand>,
}

impl Queues<Errand, Errand> for Inboxes<'_> {
    fn change(&mut self) -> Option<Errand> {
        self.names.try_recv().ok()
    }

    fn changes_waiting(&self) -> usize {
        self.names.len()
    }

    fn ask(&mut self, wait: Duration) -> Result<Option<Errand>, Closed> {
        match self.asks.recv_timeout(wait) {
            Ok(ask) => Ok(Some(ask)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(Closed),
        }
    }
}

/// The directory's three scripts, loaded on first use.
struct Scripts {
    claim: Script,
    release: Script,
    private: Script,
}

//! Hearing a Redis Cluster: a thread per listening connection (each
//! master's `SSUBSCRIBE` one, and the classic one), each blocked in its
//! read, handing what it hears to the subscriber over one queue, and
//! pinging its connection. Not what a line means (`subscriber.rs`).

use std::collections::HashMap;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use redis::{Connection, ErrorKind, PushKind, RedisError, RedisResult, Value};

use super::connect::Target;
use super::keys::{channel, room_of};
use super::messages::LinkSettings;
use super::route::Router;
use super::slots::Topology;
use crate::queue;

/// How many things heard may wait for the subscriber; past that, the
/// listening threads wait, and Redis buffers for them, as it does for
/// the subscriber of one Redis.
const HEARD_QUEUE: usize = 1024;

/// What a listening thread heard, in the order its connection heard it.
pub(super) enum Heard {
    /// A room line from its master: the room and the payload.
    Line(String, Vec<u8>),
    /// A message on a classic channel: the channel and the payload.
    Classic(String, Vec<u8>),
    /// A master confirmed one room's subscription.
    Subscribed,
    /// A master ended one room's subscription unasked (its slot moved
    /// away). Those asked for are not passed on.
    Unsubscribed(String),
    /// The connection failed, or answered wrong; its thread has ended.
    Lost(RedisError),
}

/// A change of a master's subscriptions, made by the thread that holds
/// its connection, between two reads.
enum Change {
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
}

/// The listening threads of a cluster, over the topology they were made
/// on. Dropping it stops them and waits for them: none outlives the
/// subscriber's session.
pub(super) struct Shards {
    topology: Topology,
    /// Per master, the changes its thread is to make; closing them (and
    /// `stop_classic`) is what stops the threads.
    changes: Vec<Sender<Change>>,
    stop_classic: Option<Sender<()>>,
    /// Everything the threads heard: the crate's queue, whose receiver
    /// sleeps at once where a crossbeam channel's spins and yields first
    /// (eight `sched_yield`s each time the subscriber waits, ten times a
    /// second on a quiet link).
    heard: queue::Receiver<Heard>,
    /// What was taken from `heard` and not yet passed on, the next last.
    taken: Vec<Heard>,
    /// Per master, a channel of this node's that its connection hears
    /// (see [`bell`]).
    bells: Vec<String>,
    threads: Vec<JoinHandle<()>>,
    reply_timeout: Duration,
    poll: Duration,
}

impl Shards {
    /// Hands `classic` (the connection to the classic pub/sub's node) to a
    /// thread that subscribes it to `channels` and listens, connects to
    /// every master of `topology` with a thread each, and returns once
    /// `channels` are subscribed to, so that nothing said on them from then
    /// on is missed.
    /// `node` names this node's [`bell`]s.
    pub(super) fn connect(
        target: &Target,
        topology: &Topology,
        classic: Connection,
        channels: &[&str],
        node: &str,
    ) -> RedisResult<Shards> {
        let settings = &target.settings;
        let (tell, heard) = queue::bounded(HEARD_QUEUE);
        let (stop_classic, stopped) = crossbeam_channel::bounded(0);
        let mut shards = Shards {
            topology: topology.clone(),
            changes: Vec::with_capacity(topology.shards()),
            stop_classic: Some(stop_classic),
            heard,
            taken: Vec::new(),
            bells: Vec::with_capacity(topology.shards()),
            threads: Vec::with_capacity(topology.shards() + 1),
            reply_timeout: settings.reply_timeout,
            poll: settings.poll,
        };
        let (subscribed, confirmed) = crossbeam_channel::bounded(1);
        let channels: Vec<String> = channels.iter().map(|&name| name.to_owned()).collect();
        let hear = {
            let (tell, settings) = (tell.clone(), settings.clone());
            move || hear_classic(classic, &channels, &subscribed, &stopped, &tell, &settings)
        };
        shards.threads.push(spawn("redis-hear", hear)?);
        match confirmed.recv_timeout(settings.reply_timeout + settings.poll) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(timed_out("the classic subscription was not confirmed")),
        }
        for shard in 0..topology.shards() {
            let master = topology.master(shard).to_owned();
            let mut connection = target.listen_to(&master)?;
            let bell = bell(topology, shard, node)?;
            let packed = redis::cmd("SSUBSCRIBE").arg(&bell).get_packed_command();
            connection.send_packed_command(&packed)?;
            // Within a reply's time, as connected.
            while !matches!(read(connection.recv_response()?)?, Message::Bell) {}
            shards.bells.push(bell);
            // Only as long as a change waits for a quiet connection that
            // nobody rang, or a ping for its answer.
            connection.set_read_timeout(Some(settings.poll))?;
            let (change, changes) = crossbeam_channel::unbounded();
            let listening = Listening {
                master,
                ping: packed,
                changes,
                tell: tell.clone(),
                ping_every: settings.ping_every,
                reply_timeout: settings.reply_timeout,
            };
            let hear = move || hear_master(connection, &listening);
            shards.threads.push(spawn("redis-hear-shard", hear)?);
            shards.changes.push(change);
        }
        Ok(shards)
    }

    /// The topology these connections were made on.
    pub(super) fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The next thing heard, waiting up to `wait`; `None` if nothing came.
    pub(super) fn next(&mut self, wait: Duration) -> RedisResult<Option<Heard>> {
        if let Some(heard) = self.taken.pop() {
            return Ok(Some(heard));
        }
        // Each thread says `Lost` before it ends on its own.
        if !self
            .heard
            .recv_batch_timeout(&mut self.taken, HEARD_QUEUE, wait)
        {
            return Err(RedisError::from((
                ErrorKind::Io,
                "the listening threads ended",
            )));
        }
        self.taken.reverse();
        Ok(self.taken.pop())
    }

    /// Subscribes to the rooms' channels, each on its master, and waits
    /// until each master confirmed them. What was heard meanwhile is
    /// returned, in order, to be taken as any other. `query` rings the
    /// masters' [`bell`]s.
    pub(super) fn subscribe(
        &mut self,
        rooms: &[&String],
        query: &mut Router,
    ) -> RedisResult<Vec<Heard>> {
        let by_shard = self.by_shard(rooms)?;
        let mut left = 0;
        for (shard, rooms) in by_shard.into_iter().enumerate() {
            if !rooms.is_empty() {
                left += rooms.len();
                self.change(shard, Change::Subscribe(rooms))?;
                // Its thread sees the change once its read ends. The ring
                // only hastens that: if it fails, the thread still looks
                // within a poll, and the wait below decides.
                let rung = redis::cmd("SPUBLISH")
                    .arg(&self.bells[shard])
                    .arg("")
                    .exec(query);
                if let Err(error) = rung {
                    log::debug!("redis: ringing {}: {error}", self.bells[shard]);
                }
            }
        }
        let deadline = Instant::now() + self.reply_timeout + self.poll;
        let mut meanwhile = Vec::new();
        while left > 0 {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.next(wait)? {
                Some(Heard::Subscribed) => left -= 1,
                Some(Heard::Lost(error)) => return Err(error),
                Some(heard) => meanwhile.push(heard),
                None => return Err(timed_out("a master did not confirm a subscription")),
            }
        }
        Ok(meanwhile)
    }

    /// Stops hearing the rooms' channels (their confirmations, when they
    /// come, are passed over).
    pub(super) fn unsubscribe(&mut self, rooms: &[&String]) -> RedisResult<()> {
        let by_shard = self.by_shard(rooms)?;
        for (shard, rooms) in by_shard.into_iter().enumerate() {
            if !rooms.is_empty() {
                self.change(shard, Change::Unsubscribe(rooms))?;
            }
        }
        Ok(())
    }

    fn change(&self, shard: usize, change: Change) -> RedisResult<()> {
        // Closed only once its thread ended, having said `Lost`.
        self.changes[shard]
            .send(change)
            .map_err(|_| RedisError::from((ErrorKind::Io, "a master's listening thread ended")))
    }

    /// The rooms' channels, by master.
    fn by_shard(&self, rooms: &[&String]) -> RedisResult<Vec<Vec<String>>> {
        let mut by_shard = vec![Vec::new(); self.changes.len()];
        for room in rooms {
            let name = channel(room);
            let shard = self.topology.owner(&name)?;
            by_shard[shard].push(name);
        }
        Ok(by_shard)
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        // Closed changes stop each thread at its next look (within a
        // poll; the classic thread's, within a reply's time if it is
        // pinging); the closed queue stops one waiting to hand something
        // on.
        self.changes.clear();
        self.stop_classic = None;
        // Dropped now, not after the joins: an empty queue in its place.
        drop(std::mem::replace(&mut self.heard, queue::bounded(1).1));
        for thread in self.threads.drain(..) {
            // A thread that panicked has nothing more to say.
            let _ = thread.join();
        }
    }
}

/// A channel of this node's whose slot `shard`'s master serves: its
/// listening connection hears it, so that a message there (which means
/// nothing else) ends the thread's read at once when a subscription waits
/// for it. A hash tag made of `node` (its braces left out) and a number,
/// the first of them that falls in that master's slots.
fn bell(topology: &Topology, shard: usize, node: &str) -> RedisResult<String> {
    let node = node.replace(['{', '}'], "");
    // Each number is a slot at random: a master of one slot in 16384
    // takes some 16384 tries.
    (0..1_000_000)
        .map(|n| format!("bell:{{{node}.{n}}}"))
        .find(|name| topology.shard_of(name) == Some(shard))
        .ok_or_else(|| {
            RedisError::from((
                ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
                "a master serves no slot",
            ))
        })
}

fn spawn(name: &str, run: impl FnOnce() + Send + 'static) -> RedisResult<JoinHandle<()>> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(run)
        .map_err(RedisError::from)
}

fn timed_out(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
}

/// What a master's listening thread is given besides its connection.
struct Listening {
    /// The master's address, named when it stops answering.
    master: String,
    /// The ping: `SSUBSCRIBE` of the connection's [`bell`], packed. A
    /// subscription made again is confirmed again, with a push, where a
    /// `PING` on a RESP3 connection is answered with a plain `PONG`, which
    /// the client library drops as the late reply of a read that timed
    /// out (these reads time out every quiet poll).
    ping: Vec<u8>,
    changes: Receiver<Change>,
    tell: queue::Sender<Heard>,
    ping_every: Duration,
    reply_timeout: Duration,
}

/// A master's listening thread: makes the changes asked between reads,
/// hands on what its connection hears, and pings the connection once it
/// has been quiet for [`LinkSettings::ping_every`], until the changes
/// close or the connection fails. A ping that nothing follows within
/// [`LinkSettings::reply_timeout`] counts as a failure: a master that hangs
/// (a frozen machine) keeps its connections open and says nothing, and its
/// replica may have taken over its slots meanwhile.
fn hear_master(mut connection: Connection, listening: &Listening) {
    let Listening { changes, tell, .. } = listening;
    // The `SUNSUBSCRIBE`s sent and not yet answered, by room: a master
    // answers on this connection in order, so an answer with none
    // pending is one it sent unasked (the room's slot moved).
    let mut leaving: HashMap<String, usize> = HashMap::new();
    let mut last_heard = Instant::now();
    // When the ping waiting for an answer went; anything heard answers
    // it, for it shows the master alive.
    let mut pinged: Option<Instant> = None;
    loop {
        loop {
            let change = match changes.try_recv() {
                Ok(change) => change,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            };
            let (command, channels, leaving_them) = match change {
                Change::Subscribe(channels) => ("SSUBSCRIBE", channels, false),
                Change::Unsubscribe(channels) => ("SUNSUBSCRIBE", channels, true),
            };
            // One channel per command: channels of different slots in
            // one are refused.
            for name in channels {
                if leaving_them {
                    if let Some(room) = room_of(&name) {
                        *leaving.entry(room.to_owned()).or_default() += 1;
                    }
                }
                let packed = redis::cmd(command).arg(name).get_packed_command();
                if let Err(error) = connection.send_packed_command(&packed) {
                    let _ = tell.send(Heard::Lost(error));
                    return;
                }
            }
        }
        if pinged.is_none() && last_heard.elapsed() >= listening.ping_every {
            if let Err(error) = connection.send_packed_command(&listening.ping) {
                let _ = tell.send(Heard::Lost(error));
                return;
            }
            pinged = Some(Instant::now());
        }
        let message = connection.recv_response().and_then(read);
        if message.is_ok() {
            last_heard = Instant::now();
            pinged = None;
        }
        let heard = match message {
            Ok(Message::Line(room, payload)) => Heard::Line(room, payload),
            Ok(Message::Subscribed) => Heard::Subscribed,
            Ok(Message::Unsubscribed(room)) => match leaving.get_mut(&room) {
                Some(pending) => {
                    *pending -= 1;
                    if *pending == 0 {
                        leaving.remove(&room);
                    }
                    continue;
                }
                None => Heard::Unsubscribed(room),
            },
            Ok(Message::Bell | Message::Other) => continue,
            // Quiet for a poll, with no ping unanswered for long: time to
            // look at the changes and the clock.
            Err(error)
                if error.is_timeout()
                    && pinged.is_none_or(|at| at.elapsed() < listening.reply_timeout) =>
            {
                continue
            }
            Err(error) if error.is_timeout() => Heard::Lost(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "master {} did not answer a ping within {:?}",
                    listening.master, listening.reply_timeout
                ),
            ))),
            Err(error) => Heard::Lost(error),
        };
        let lost = matches!(heard, Heard::Lost(_));
        // Refused only once the subscriber stopped listening.
        if tell.send(heard).is_err() || lost {
            return;
        }
    }
}

/// The classic connection's thread: subscribes to `channels` (and says
/// so on `subscribed`), then hands on what it hears, and `PING`s it every
/// [`LinkSettings::ping_every`] (a connection whose other end vanished
/// without a word otherwise looks merely quiet), until `stop` closes or
/// the connection fails.
fn hear_classic(
    mut connection: Connection,
    channels: &[String],
    subscribed: &Sender<RedisResult<()>>,
    stop: &Receiver<()>,
    tell: &queue::Sender<Heard>,
    settings: &LinkSettings,
) {
    let mut pubsub = connection.as_pubsub();
    let ready = pubsub
        .subscribe(channels)
        .and_then(|()| pubsub.set_read_timeout(Some(settings.poll)));
    let failed = ready.is_err();
    // Never full: one send, to a queue of one.
    let _ = subscribed.send(ready);
    if failed {
        return;
    }
    let mut last_ping = Instant::now();
    loop {
        if !matches!(stop.try_recv(), Err(TryRecvError::Empty)) {
            return;
        }
        if last_ping.elapsed() >= settings.ping_every {
            if let Err(error) = super::state::ping(&mut pubsub, settings) {
                let _ = tell.send(Heard::Lost(error));
                return;
            }
            last_ping = Instant::now();
        }
        let heard = match pubsub.get_message() {
            Ok(message) => Heard::Classic(
                message.get_channel_name().to_owned(),
                message.get_payload_bytes().to_vec(),
            ),
            // Quiet for a poll: time to look at the stop and the clock.
            Err(error) if error.is_timeout() => continue,
            Err(error) => Heard::Lost(error),
        };
        let lost = matches!(heard, Heard::Lost(_));
        // Refused only once the subscriber stopped listening.
        if tell.send(heard).is_err() || lost {
            return;
        }
    }
}

/// What came on a shard's connection.
enum Message {
    Line(String, Vec<u8>),
    /// A room's subscription confirmed.
    Subscribed,
    Unsubscribed(String),
    /// The [`bell`]'s subscription confirmed: the first, or a ping's
    /// answer (the only channels these connections subscribe to are
    /// rooms' and the bell).
    Bell,
    Other,
}

/// Reads what a subscribed RESP3 connection hears: the pushes
/// `smessage CHANNEL PAYLOAD`, `ssubscribe CHANNEL COUNT`, `sunsubscribe
/// CHANNEL COUNT`; an error reply is an error; anything else is passed
/// over. (The client library skips a plain reply for every read that
/// timed out, and these reads time out every quiet poll: a refused
/// subscription, a `MOVED`, mostly shows as a confirmation that never
/// comes, which `Shards::subscribe` waits for within a bound.)
fn read(value: Value) -> RedisResult<Message> {
    let (kind, data) = match value {
        Value::Push { kind, data } => (kind, data),
        Value::ServerError(error) => return Err(error.into()),
        _ => return Ok(Message::Other),
    };
    let text = |value: Option<&Value>| match value {
        Some(Value::BulkString(bytes)) => Some(bytes.clone()),
        _ => None,
    };
    let room = text(data.first())
        .and_then(|name| String::from_utf8(name).ok())
        .and_then(|name| room_of(&name).map(str::to_owned));
    Ok(match (kind, room) {
        (PushKind::SMessage, Some(room)) => match text(data.get(1)) {
            Some(payload) => Message::Line(room, payload),
            None => Message::Other,
        },
        (PushKind::SSubscribe, Some(_)) => Message::Subscribed,
        (PushKind::SSubscribe, None) => Message::Bell,
        (PushKind::SUnsubscribe, Some(room)) => Message::Unsubscribed(room),
        _ => Message::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn push(kind: PushKind, data: Vec<Value>) -> Value {
        Value::Push { kind, data }
    }

    #[test]
    fn sharded_messages_are_read() {
        let line = push(
            PushKind::SMessage,
            vec![bulk("room:{lobby}"), bulk("1 a hi")],
        );
        assert!(matches!(read(line), Ok(Message::Line(room, payload))
            if room == "lobby" && payload == b"1 a hi"));
        let subscribed = push(
            PushKind::SSubscribe,
            vec![bulk("room:{lobby}"), Value::Int(1)],
        );
        assert!(matches!(read(subscribed), Ok(Message::Subscribed)));
        let bell = push(
            PushKind::SSubscribe,
            vec![bulk("bell:{a.7}"), Value::Int(2)],
        );
        assert!(matches!(read(bell), Ok(Message::Bell)));
        let gone = push(
            PushKind::SUnsubscribe,
            vec![bulk("room:{lobby}"), Value::Int(0)],
        );
        assert!(matches!(read(gone), Ok(Message::Unsubscribed(room)) if room == "lobby"));
        let pong = Value::SimpleString("PONG".into());
        assert!(matches!(read(pong), Ok(Message::Other)));
        let other = push(PushKind::SMessage, vec![bulk("chat:ask"), bulk("x")]);
        assert!(matches!(read(other), Ok(Message::Other)));
    }
}

//! Hearing rooms on a Redis Cluster: one connection per master, each
//! subscribed (`SSUBSCRIBE`, sharded pub/sub) to the channels of the rooms
//! its slots hold, read as RESP3 pushes (the client library's synchronous
//! `PubSub` does not know `smessage`). Not what a room line means once heard
//! (`subscriber.rs`), nor the channels every node hears (classic pub/sub,
//! on the subscriber's own connection).

use std::time::{Duration, Instant};

use redis::{Connection, ErrorKind, PushKind, RedisError, RedisResult, Value};

use super::connect::Target;
use super::keys::{channel, room_of};
use super::slots::Topology;

/// How long each connection is read for in turn when nothing comes: the
/// most a line waits, per master, behind a quiet one. (One thread reads
/// them all; the classic connection gets the same.)
pub(super) const TURN: Duration = Duration::from_millis(2);

/// A room line heard: its room and the payload.
pub(super) type Heard = (String, Vec<u8>);

/// One listening connection per master of the topology it was made on.
pub(super) struct Shards {
    topology: Topology,
    open: Vec<Connection>,
    reply_timeout: Duration,
}

impl Shards {
    /// Connects to every master of `topology`.
    pub(super) fn connect(target: &Target, topology: &Topology) -> RedisResult<Shards> {
        let mut open = Vec::with_capacity(topology.shards());
        for shard in 0..topology.shards() {
            let connection = target.listen_to(topology.master(shard))?;
            connection.set_read_timeout(Some(TURN))?;
            open.push(connection);
        }
        Ok(Shards {
            topology: topology.clone(),
            open,
            reply_timeout: target.settings.reply_timeout,
        })
    }

    /// The topology these connections were made on.
    pub(super) fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Subscribes to the rooms' channels, each on its master, one
    /// channel per command (channels of different slots in one are
    /// refused), and waits until each master confirmed them. Lines heard
    /// meanwhile are returned, to be taken as any other.
    pub(super) fn subscribe(&mut self, rooms: &[&String]) -> RedisResult<Vec<Heard>> {
        self.send_each(rooms, "SSUBSCRIBE")?;
        let mut heard = Vec::new();
        let mut waiting: Vec<usize> = vec![0; self.open.len()];
        for room in rooms {
            waiting[self.shard(room)?] += 1;
        }
        for (shard, waiting) in waiting.into_iter().enumerate() {
            let deadline = Instant::now() + self.reply_timeout;
            let mut left = waiting;
            while left > 0 {
                match self.open[shard].recv_response() {
                    Ok(value) => match read(value)? {
                        Message::Line(room, payload) => heard.push((room, payload)),
                        Message::Subscribed => left -= 1,
                        Message::Other | Message::Unsubscribed(_) => {}
                    },
                    Err(error) if error.is_timeout() && Instant::now() < deadline => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(heard)
    }

    /// Stops hearing the rooms' channels (the confirmations are read,
    /// and passed over, with the lines).
    pub(super) fn unsubscribe(&mut self, rooms: &[&String]) -> RedisResult<()> {
        self.send_each(rooms, "SUNSUBSCRIBE")
    }

    fn send_each(&mut self, rooms: &[&String], command: &str) -> RedisResult<()> {
        for room in rooms {
            let shard = self.shard(room)?;
            let packed = redis::cmd(command).arg(channel(room)).get_packed_command();
            self.open[shard].send_packed_command(&packed)?;
        }
        Ok(())
    }

    fn shard(&self, room: &str) -> RedisResult<usize> {
        self.topology.shard_of(&channel(room)).ok_or_else(|| {
            RedisError::from((
                ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
                "no master serves this room's slot",
            ))
        })
    }

    /// Reads what came on each connection, a [`TURN`] at most each when
    /// nothing does. `still_wanted` says whether a room is still to be
    /// heard: a master that stops its subscription to one unasked (its
    /// slot moved away) is an error, so the subscriber starts over on the
    /// topology as it is now.
    pub(super) fn read(&mut self, still_wanted: impl Fn(&str) -> bool) -> RedisResult<Vec<Heard>> {
        let mut heard = Vec::new();
        for shard in 0..self.open.len() {
            loop {
                match self.open[shard].recv_response() {
                    Ok(value) => match read(value)? {
                        Message::Line(room, payload) => heard.push((room, payload)),
                        Message::Unsubscribed(room) if still_wanted(&room) => {
                            return Err(RedisError::from((
                                ErrorKind::Server(redis::ServerErrorKind::Moved),
                                "a room's slot moved to another master",
                            )));
                        }
                        Message::Subscribed | Message::Unsubscribed(_) | Message::Other => {}
                    },
                    Err(error) if error.is_timeout() => break,
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(heard)
    }
}

/// What came on a shard's connection.
enum Message {
    Line(String, Vec<u8>),
    Subscribed,
    Unsubscribed(String),
    Other,
}

/// Reads what a subscribed RESP3 connection hears: the pushes
/// `smessage CHANNEL PAYLOAD`, `ssubscribe CHANNEL COUNT`, `sunsubscribe
/// CHANNEL COUNT`; an error reply (a `MOVED`, a subscription refused) is
/// an error; anything else is passed over.
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
        (PushKind::SSubscribe, _) => Message::Subscribed,
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

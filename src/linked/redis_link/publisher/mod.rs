//! The link's first thread: hands Redis the lines said here, a batch at
//! a time, each room's lines of a batch through one call of the script
//! that numbers, keeps and publishes them; and the pause between attempts
//! while Redis is away.

use std::collections::HashSet;

// The link's types, constants and helpers, which this part shares.
use super::*;

/// Waits `wait`, or less if the link stops. True if it is stopping.
pub(super) fn pause(shared: &LinkState, woken: &Receiver<()>, wait: Duration) -> bool {
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
pub(super) fn is_transient(error: &RedisError) -> bool {
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
                Server::BusyLoading
                    | Server::TryAgain
                    | Server::MasterDown
                    | Server::ReadOnly
                    | Server::Moved
                    | Server::Ask
                    | Server::ClusterDown
            )
        )
}

/// The most lines the publisher sends in one round trip (a pipeline):
/// one round trip per line would cap a node at a few thousand lines a
/// second on a real network. Batches form only while Redis is behind (a
/// line that finds the queue empty goes at once), and the more lines of
/// one room a batch holds, the less Redis spends per line: one script
/// call per room and batch, not per line.
pub(super) const BATCH: usize = 512;

/// The most bytes of lines in one batch, past which it goes as it is
/// (one line more may take it over), so that no script call holds more.
/// What a call publishes lands in every subscribed node's output buffer
/// in Redis at once (Redis writes to its clients between commands, not
/// during one), and a buffer past Redis' pub/sub limit has its node cut
/// off, this node's own included: a call stays far below that limit
/// (`client-output-buffer-limit pubsub`, 32 MB, or 8 MB for a minute, by
/// default), and below the 64 KiB the tests set to cut a slow node off.
pub(super) const BATCH_BYTES: usize = 32 * 1024;

/// How many times the publisher tries a batch Redis refuses for another
/// reason (out of memory, say) before it drops it. (A line refused while
/// a later one of its room in the same batch went through is dropped at
/// once: the later count marks it as done.)
pub(super) const REFUSALS_BEFORE_DROP: u32 = 5;

/// A batch's lines as the script's calls take them: each room's lines
/// together, in their order (so in count order), the rooms in the order
/// of their first line; a room's lines split after each that sets the
/// topic, which the script sets with the last line of a call. Lines of
/// different rooms may so go in another order than they came: each room
/// has its own order, and no other is kept across rooms.
pub(super) fn calls(batch: &[(u64, ToPublish)]) -> Vec<Vec<&(u64, ToPublish)>> {
    let mut by_room: Vec<Vec<&(u64, ToPublish)>> = Vec::new();
    let mut rooms: HashMap<&str, usize> = HashMap::new();
    for numbered in batch {
        let room = numbered.1.room.as_str();
        let index = *rooms.entry(room).or_insert_with(|| {
            by_room.push(Vec::new());
            by_room.len() - 1
        });
        by_room[index].push(numbered);
    }
    let mut calls = Vec::with_capacity(by_room.len());
    for lines in by_room {
        let mut call = Vec::new();
        for numbered in lines {
            call.push(numbered);
            if numbered.1.topic.is_some() {
                calls.push(std::mem::take(&mut call));
            }
        }
        if !call.is_empty() {
            calls.push(call);
        }
    }
    calls
}

/// How a pipeline of the script's calls goes.
#[derive(Clone, Copy)]
pub(super) struct Sending<'s> {
    /// [`PUBLISH_SCRIPT`].
    pub(super) script: &'s Script,
    pub(super) settings: &'s LinkSettings,
    /// This run of the node, as the senders hash knows it.
    pub(super) sender: &'s str,
    pub(super) node: &'s str,
    /// `PUBLISH`, or `SPUBLISH` on a cluster.
    pub(super) publish: &'s str,
    /// Whether these calls were sent before (a retry): then the script
    /// checks each line's count against what Redis has, and skips the
    /// lines it published already. A first send is checked by each
    /// call's last count alone (see [`PUBLISH_SCRIPT`]).
    pub(super) resend: bool,
}

/// One `EVALSHA` of the script per call (see [`calls`]), all in one
/// pipeline; the rooms in `renew` get their keys' expiry again.
pub(super) fn pipeline(
    send: &Sending<'_>,
    calls: &[&Vec<&(u64, ToPublish)>],
    renew: &HashSet<&str>,
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for call in calls {
        let (Some((_, first)), Some((last_count, last))) = (call.first(), call.last()) else {
            continue;
        };
        let keys = Keys::of(&first.room);
        pipe.cmd("EVALSHA")
            .arg(send.script.get_hash())
            .arg(keys.of_lines().len());
        for key in keys.of_lines() {
            pipe.arg(key);
        }
        // Only a call's last line can set the topic: see `calls`.
        let mut flags = String::new();
        if send.resend {
            flags.push('c');
        }
        if last.topic.is_some() {
            flags.push('t');
        }
        if renew.contains(first.room.as_str()) {
            flags.push('r');
        }
        pipe.arg(&keys.channel)
            .arg(send.settings.history)
            .arg(send.settings.history_bytes)
            .arg(millis(send.settings.room_ttl))
            .arg(send.sender)
            .arg(send.node)
            .arg(send.publish)
            .arg(flags)
            .arg(last.topic.as_deref().unwrap_or_default())
            .arg(call.len())
            .arg(last_count)
            .arg(frame(call.iter().map(|(_, line)| line.line.as_str())));
        if send.resend {
            for (count, _) in call.iter() {
                pipe.arg(*count);
            }
        }
    }
    pipe
}

/// How many rooms the publisher remembers renewing (see
/// [`Publisher::renewed`]): past it, it forgets them all, which costs a
/// renewal more per room, not a room's keys.
const RENEWED_KEPT: usize = 1 << 16;

/// What became of a call the publisher made until it was done.
pub(super) enum Tried<T> {
    /// Redis answered this.
    Done(T),
    /// Redis refused it [`REFUSALS_BEFORE_DROP`] times: dropped.
    Dropped,
    /// The link stops.
    Stopping,
}

/// The publisher thread: runs the script for each room's lines, in
/// order, on its own connection; and the rules' script for each change of
/// a room's rules, in its place among them.
pub(super) struct Publisher {
    /// Dropped with the thread: [`RedisLink`]'s drop waits for that.
    pub(super) _publishing: Sender<()>,
    pub(super) target: Arc<Target>,
    pub(super) shared: Arc<LinkState>,
    pub(super) woken: Receiver<()>,
    pub(super) script: Script,
    /// [`RULES_SCRIPT`](super::rules::RULES_SCRIPT).
    pub(super) rules_script: Script,
    pub(super) node: String,
    /// `PUBLISH` on one Redis, `SPUBLISH` on a cluster.
    pub(super) publish_command: &'static str,
    /// This run of the node, as the script's senders hash knows it.
    pub(super) sender: String,
    /// How many lines this run has taken: each line's count.
    pub(super) count: u64,
    /// When this node's lines last renewed each room's keys: its first
    /// call in a room renews them, and one at least every half of
    /// [`LinkSettings::room_ttl`] after, so that after any line of this
    /// node the room's keys have at least half of it left.
    pub(super) renewed: HashMap<String, Instant>,
}

impl Publisher {
    pub(super) fn run(mut self, outgoing: Receiver<Outgoing>, mut connection: Router) {
        let poll = self.target.settings.poll;
        let mut batch = Vec::with_capacity(BATCH);
        let mut bytes = 0;
        loop {
            let mut next = match outgoing.recv_timeout(poll) {
                Ok(first) => Some(first),
                Err(RecvTimeoutError::Timeout) if !self.shared.stopping() => continue,
                Err(_) => return,
            };
            // Whatever else waits goes in the same round trip, up to a
            // change of rules: that goes alone, after the lines before it.
            while let Some(taken) = next.take() {
                self.shared.outbox_out.add(1);
                match taken {
                    Outgoing::Line(line) => {
                        bytes += line.line.len();
                        batch.push(self.numbered(line));
                        if batch.len() < BATCH && bytes < BATCH_BYTES {
                            next = outgoing.try_recv().ok();
                        }
                    }
                    Outgoing::Rules(write) => {
                        if !batch.is_empty() && !self.publish(&mut connection, &batch) {
                            return;
                        }
                        batch.clear();
                        bytes = 0;
                        if !self.write_rules(&mut connection, write) {
                            return;
                        }
                        next = outgoing.try_recv().ok();
                    }
                }
            }
            if !batch.is_empty() && !self.publish(&mut connection, &batch) {
                return;
            }
            batch.clear();
            bytes = 0;
        }
    }

    /// The line, with its count.
    pub(super) fn numbered(&mut self, line: ToPublish) -> (u64, ToPublish) {
        self.count += 1;
        (self.count, line)
    }

    /// The rooms of `calls` whose keys this call is to renew.
    pub(super) fn due_renewals<'b>(&self, calls: &[Vec<&'b (u64, ToPublish)>]) -> HashSet<&'b str> {
        let every = self.target.settings.room_ttl / 2;
        calls
            .iter()
            .filter_map(|call| call.first())
            .map(|(_, line)| line.room.as_str())
            .filter(|room| {
                self.renewed
                    .get(*room)
                    .is_none_or(|at| at.elapsed() >= every)
            })
            .collect()
    }

    /// Publishes a batch of lines, retrying across reconnections until
    /// Redis has them all. A retry sends the whole batch again, with the
    /// check: the lines Redis already had are recognised by their counts
    /// and skipped (a prefix of each call's: calls run one after another,
    /// each marks its lines as done before it publishes any, and each
    /// room's counts grow from call to call). False if the link stops
    /// first.
    ///
    /// The batch goes as one pipeline per master (one Redis is a cluster
    /// of one master), each with the rooms of its slots, one after
    /// another: on a cluster, a master that is down holds up the rest
    /// until it is back or its replica took over (while it is, the
    /// subscriber says the link is down, and no new line is taken). The
    /// rooms are sorted out again at each try, so a room whose slot moved
    /// goes to its new master.
    pub(super) fn publish(&mut self, connection: &mut Router, batch: &[(u64, ToPublish)]) -> bool {
        let what = format!("{} lines", batch.len());
        let calls = calls(batch);
        let renew = self.due_renewals(&calls);
        let mut send = Sending {
            script: &self.script,
            settings: &self.target.settings,
            sender: &self.sender,
            node: &self.node,
            publish: self.publish_command,
            resend: false,
        };
        // Before the first try: whichever try ran the calls ran after
        // this, so the renewal is never stamped later than it was made
        // (a reply lost and retried for a while would stamp it late).
        let sent = Instant::now();
        let done = self.until_done(connection, &self.script, &what, |router| {
            let mut by_shard: BTreeMap<usize, Vec<&Vec<&(u64, ToPublish)>>> = BTreeMap::new();
            for call in &calls {
                let Some((_, line)) = call.first() else {
                    continue;
                };
                let shard = router.shard_of(&channel(&line.room))?;
                by_shard.entry(shard).or_default().push(call);
            }
            let this_try = send;
            // Whatever happens to this try, the next is a resend.
            send.resend = true;
            for part in by_shard.values() {
                pipeline(&this_try, part, &renew).exec(router)?;
            }
            Ok(())
        });
        match done {
            Tried::Stopping => return false,
            Tried::Dropped => return true,
            Tried::Done(()) => {}
        }
        if self.renewed.len() + renew.len() > RENEWED_KEPT {
            self.renewed.clear();
        }
        for room in renew {
            self.renewed.insert(room.to_owned(), sent);
        }
        true
    }

    /// Makes `call` with `script` until Redis answers it, across
    /// reconnections; `what` names it in the log if it is dropped.
    pub(super) fn until_done<T>(
        &self,
        connection: &mut Router,
        script: &Script,
        what: &str,
        mut call: impl FnMut(&mut Router) -> redis::RedisResult<T>,
    ) -> Tried<T> {
        let mut backoff = reconnect_backoff();
        let mut refusals = 0;
        loop {
            if self.shared.stopping() {
                return Tried::Stopping;
            }
            let open = &mut *connection;
            let error = match call(open) {
                Ok(done) => return Tried::Done(done),
                Err(error) => error,
            };
            // A Redis that restarted has forgotten the script: load it
            // again and retry at once.
            if error.kind() == ErrorKind::Server(redis::ServerErrorKind::NoScript) {
                if script.load(open).is_ok() {
                    continue;
                }
                connection.reset();
                if pause(&self.shared, &self.woken, backoff.next_wait()) {
                    return Tried::Stopping;
                }
                continue;
            }
            let reason = self.target.describe(&error);
            if is_transient(&error) {
                log::debug!("redis {}: publish failed: {reason}", self.target.addr);
                // New connections: these may hold late replies.
                connection.reset();
            } else {
                refusals += 1;
                if refusals >= REFUSALS_BEFORE_DROP {
                    log::warn!("redis {}: {what} dropped: {reason}", self.target.addr);
                    return Tried::Dropped;
                }
            }
            if pause(&self.shared, &self.woken, backoff.next_wait()) {
                return Tried::Stopping;
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! The link's second thread: hears every room this node is in, delivers
//! each line once and in order, reads back what pub/sub lost, and
//! notices Redis going away and coming back.

// The link's types, constants and helpers, which this part shares.
use super::hearing::Hearing;
use super::rules::marker_version;
use super::*;

/// Why a subscriber's session ended.
pub(super) enum SubscriberEnd {
    /// The link is stopping, or nobody takes deliveries any more.
    Stop,
    /// Redis went away, or answered wrong: reconnect.
    Lost(String),
}

/// A session ends because `error` lost it: said by Redis' address only.
pub(super) fn lost(target: &Target, error: RedisError) -> SubscriberEnd {
    SubscriberEnd::Lost(target.describe(&error))
}

/// The subscriber thread's state, kept across connections.
pub(super) struct Subscriber {
    pub(super) target: Arc<Target>,
    pub(super) shared: Arc<LinkState>,
    pub(super) woken: Receiver<()>,
    pub(super) deliver: Arc<Outlet>,
    /// The data set's epoch when last connected.
    pub(super) epoch: String,
    /// Where private lines for this node's users come.
    pub(super) own_channel: String,
    /// To tell the directory thread when Redis is back (on the queue
    /// that is never full).
    pub(super) names: Sender<Errand>,
    /// Per room subscribed to, the next seq to deliver.
    pub(super) next: HashMap<String, u64>,
    /// Per room subscribed to, the join it was for.
    pub(super) joined: HashMap<String, u64>,
    /// Per room subscribed to, the version of its rules last delivered.
    pub(super) rules_seen: HashMap<String, u64>,
    /// When the link went down, while it is: `LinkDown` was said, and
    /// `LinkUp` is owed.
    pub(super) down_since: Option<Instant>,
    /// [`TOUCH_SCRIPT`], run by its hash: a renewal of a thousand rooms
    /// sends the hash a thousand times, not the script.
    pub(super) touch_script: Script,
    /// The server bans as last delivered (none, before the first): read
    /// again on each connection, and delivered only if they changed.
    pub(super) server_bans: Option<String>,
}

impl Subscriber {
    pub(super) fn run(mut self, listen: Connection, mut query: Router) {
        let mut listening = Some(listen);
        let mut backoff = reconnect_backoff();
        loop {
            let listen = match listening.take() {
                Some(listen) => listen,
                None => match self.reconnect(&mut query) {
                    Ok(listen) => listen,
                    Err(error) => {
                        log::debug!(
                            "redis {}: cannot reconnect: {}",
                            self.target.addr,
                            self.target.describe(&error)
                        );
                        if pause(&self.shared, &self.woken, backoff.next_wait()) {
                            return;
                        }
                        continue;
                    }
                },
            };
            match self.session(listen, &mut query, &mut backoff) {
                SubscriberEnd::Stop => return,
                SubscriberEnd::Lost(reason) => {
                    self.shared.up.store(false, Ordering::SeqCst);
                    if self.down_since.is_none() {
                        self.down_since = Some(Instant::now());
                        log::warn!("redis {}: link down: {reason}", self.target.addr);
                        if self.send(Delivery::LinkDown { reason }).is_err() {
                            return;
                        }
                    }
                    if pause(&self.shared, &self.woken, backoff.next_wait()) {
                        return;
                    }
                }
            }
        }
    }

    /// New connections after a failure: the topology read again (a master
    /// may have failed over), and a connection to listen on: the URL's
    /// Redis, or on a cluster the classic pub/sub's master as it is now.
    fn reconnect(&self, query: &mut Router) -> redis::RedisResult<Connection> {
        query.reset();
        query.read_again(true);
        self.target.listening(query.topology())
    }

    /// One connection's life: catch up, then listen until it fails.
    pub(super) fn session(
        &mut self,
        mut listen: Connection,
        query: &mut Router,
        backoff: &mut Backoff,
    ) -> SubscriberEnd {
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
                Ok(number) if number <= MAX_NODE_NUMBER => {
                    self.shared.number.store(number, Ordering::SeqCst);
                }
                Ok(number) => {
                    return SubscriberEnd::Lost(format!(
                        "{NODES_KEY} is {number}, past {MAX_NODE_NUMBER}: not the chat's"
                    ))
                }
                Err(error) => return lost(&self.target, error),
            }
            self.epoch = epoch;
            for next in self.next.values_mut() {
                *next = 1;
            }
            // Rules at version 0 now say only that Redis forgot them, not
            // that they were lifted: the node keeps its copy, and writes it
            // back once up (`Delivery::LinkUp`); later versions are read.
            for seen in self.rules_seen.values_mut() {
                *seen = 0;
            }
        }
        let target = Arc::clone(&self.target);
        let settings = &target.settings;
        let wanted = self.shared.wanted_rooms();
        self.forget_rooms_not_in(&wanted);
        // A private line sent while the node was away is lost: its
        // sender was told nobody by that name is connected.
        let channels = [self.own_channel.as_str(), ASK_CHANNEL, MODERATION_CHANNEL];
        // On a cluster, rooms are heard on their masters (sharded pub/sub).
        let mut hearing = if query.topology().is_cluster() {
            match Shards::connect(
                &self.target,
                query.topology(),
                listen,
                &channels,
                &self.own_channel,
            ) {
                Ok(shards) => Hearing::Cluster(shards),
                Err(error) => return lost(&self.target, error),
            }
        } else {
            let mut pubsub = listen.as_pubsub();
            if let Err(error) = pubsub.subscribe(&channels) {
                return lost(&self.target, error);
            }
            Hearing::Alone(pubsub)
        };
        // Read once subscribed, so that no change falls in between: bans
        // made while this node was away (or before it started) hold here.
        let mut bans: Option<String> = match redis::cmd("GET").arg(SERVER_BANS_KEY).query(query) {
            Ok(bans) => bans,
            Err(error) => return lost(&self.target, error),
        };
        // Redis lost them with its data, not lifted: this node's copy goes
        // back, unless another node's is there first (the same, as a rule:
        // every node had what Redis had).
        if let (true, None, Some(kept)) = (history_lost, &bans, &self.server_bans) {
            let written = redis::cmd("SET")
                .arg(SERVER_BANS_KEY)
                .arg(kept)
                .arg("NX")
                .exec(query)
                .and_then(|()| redis::cmd("GET").arg(SERVER_BANS_KEY).query(query));
            bans = match written {
                Ok(bans) => bans,
                Err(error) => return lost(&self.target, error),
            };
        }
        if bans != self.server_bans {
            self.server_bans.clone_from(&bans);
            if self.send(Delivery::ServerBans(bans)).is_err() {
                return SubscriberEnd::Stop;
            }
        }
        let rooms: Vec<(&String, u64)> = wanted.iter().map(|(room, &join)| (room, join)).collect();
        if let Err(end) = self.subscribe(&mut hearing, query, &rooms) {
            return end;
        }
        backoff.reset();
        self.shared.up.store(true, Ordering::SeqCst);
        if self.down_since.take().is_some() {
            self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
            // Names first: a claim from elsewhere must not find them
            // lapsed (or, after Redis lost its data, gone).
            // Full: the directory renews on its own schedule, or when its
            // own connection comes back.
            let _ = self.names.try_send(Errand::Renew);
            log::info!("redis {}: link up", self.target.addr);
            if self.send(Delivery::LinkUp { history_lost }).is_err() {
                return SubscriberEnd::Stop;
            }
        }
        let mut last_ping = Instant::now();
        let mut last_touch = Instant::now();
        let touch_every = (settings.room_ttl / 3).max(settings.poll);
        if let Hearing::Alone(pubsub) = &mut hearing {
            if let Err(error) = pubsub.set_read_timeout(Some(settings.poll)) {
                return lost(&self.target, error);
            }
        }
        loop {
            if self.shared.stopping() {
                return SubscriberEnd::Stop;
            }
            if self.shared.rooms_changed.load(Ordering::SeqCst) {
                if let Err(end) = self.change_rooms(&mut hearing, query) {
                    return end;
                }
            }
            if last_ping.elapsed() >= settings.ping_every {
                match &mut hearing {
                    Hearing::Alone(pubsub) => {
                        if let Err(error) = super::state::ping(pubsub, settings) {
                            return lost(&self.target, error);
                        }
                    }
                    // The classic connection's thread pings it, and each
                    // master's listening thread pings its own (shards.rs).
                    // Here the cluster is asked whether its masters
                    // changed, as they do when a replica took over from a
                    // master that went quiet without closing its
                    // connections.
                    Hearing::Cluster(shards) => {
                        query.read_again(false);
                        if shards.topology() != query.topology() {
                            return SubscriberEnd::Lost("the cluster's masters changed".to_owned());
                        }
                    }
                }
                last_ping = Instant::now();
            }
            if last_touch.elapsed() >= touch_every {
                let rooms: Vec<String> = self.next.keys().cloned().collect();
                if let Err(end) = self.touch(query, rooms.iter().map(String::as_str)) {
                    return end;
                }
                last_touch = Instant::now();
            }
            // Quiet for a poll: time to look at the rooms, the clock, the stop.
            let taken = match &mut hearing {
                Hearing::Alone(pubsub) => match pubsub.get_message() {
                    Ok(message) => self.on_classic(
                        query,
                        message.get_channel_name(),
                        message.get_payload_bytes(),
                    ),
                    Err(error) if error.is_timeout() => Ok(()),
                    Err(error) => Err(lost(&self.target, error)),
                },
                Hearing::Cluster(shards) => match shards.next(settings.poll) {
                    Ok(Some(heard)) => self.on_heard(query, heard),
                    Ok(None) => Ok(()),
                    Err(error) => Err(lost(&self.target, error)),
                },
            };
            if let Err(end) = taken {
                return end;
            }
        }
    }

    /// Subscribes to the rooms the hub now wants, and unsubscribes from
    /// those it left.
    pub(super) fn change_rooms(
        &mut self,
        hearing: &mut Hearing<'_>,
        query: &mut Router,
    ) -> Result<(), SubscriberEnd> {
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
        match hearing {
            Hearing::Alone(pubsub) => {
                let channels: Vec<String> = gone.iter().map(|room| channel(room)).collect();
                pubsub
                    .set_read_timeout(Some(settings.reply_timeout))
                    .and_then(|()| {
                        if channels.is_empty() {
                            Ok(())
                        } else {
                            pubsub.unsubscribe(channels)
                        }
                    })
                    .map_err(|error| lost(&self.target, error))?;
            }
            Hearing::Cluster(shards) if !gone.is_empty() => {
                let rooms: Vec<&String> = gone.iter().collect();
                shards
                    .unsubscribe(&rooms)
                    .map_err(|error| lost(&self.target, error))?;
            }
            Hearing::Cluster(_) => {}
        }
        // Subscribing again to a channel already subscribed to changes
        // nothing in Redis.
        self.subscribe(hearing, query, &new)?;
        match hearing {
            Hearing::Alone(pubsub) => pubsub
                .set_read_timeout(Some(settings.poll))
                .map_err(|error| lost(&self.target, error)),
            Hearing::Cluster(_) => Ok(()),
        }
    }

    /// Forgets the rooms the hub no longer wants, or wants for a newer
    /// join.
    pub(super) fn forget_rooms_not_in(&mut self, wanted: &BTreeMap<String, u64>) {
        let joined = &self.joined;
        self.next.retain(|room, _| {
            wanted
                .get(room)
                .is_some_and(|join| joined.get(room) == Some(join))
        });
        self.joined.retain(|room, _| self.next.contains_key(room));
        self.rules_seen
            .retain(|room, _| self.next.contains_key(room));
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
    pub(super) fn subscribe(
        &mut self,
        hearing: &mut Hearing<'_>,
        query: &mut Router,
        rooms: &[(&String, u64)],
    ) -> Result<(), SubscriberEnd> {
        if rooms.is_empty() {
            return Ok(());
        }
        let mut before = HashMap::new();
        for &(room, _) in rooms {
            if !self.next.contains_key(room) {
                let seq = current_seq(query, room).map_err(|error| lost(&self.target, error))?;
                before.insert(room, seq);
            }
        }
        let mut heard_meanwhile = Vec::new();
        match hearing {
            Hearing::Cluster(shards) => {
                let names: Vec<&String> = rooms.iter().map(|&(room, _)| room).collect();
                heard_meanwhile = shards
                    .subscribe(&names, query)
                    .map_err(|error| lost(&self.target, error))?;
            }
            Hearing::Alone(pubsub) => {
                let channels: Vec<String> = rooms.iter().map(|(room, _)| channel(room)).collect();
                pubsub
                    .subscribe(channels)
                    .map_err(|error| lost(&self.target, error))?;
            }
        }
        for &(room, join) in rooms {
            self.joined.insert(room.clone(), join);
            if let Some(&past) = before.get(room) {
                let recent = self.recent(query, room, past)?;
                self.send(recent)?;
                self.next.insert(room.clone(), past + 1);
            } else {
                // Back after an outage: the rules as they are now, if they
                // changed, before any line missed meanwhile (their markers
                // may be gone from the history, and lines may break them).
                self.deliver_rules(query, room)?;
            }
            let current = current_seq(query, room).map_err(|error| lost(&self.target, error))?;
            let mut next = self.next[room];
            if current + 1 < next {
                next = self.went_back(room, current);
                self.next.insert(room.clone(), next);
            }
            if next <= current {
                self.fill(query, room, next, current)?;
            }
        }
        // Said while the subscriptions were confirmed: from the history
        // above already, or next in line.
        for heard in heard_meanwhile {
            self.on_heard(query, heard)?;
        }
        let rooms = rooms.iter().map(|&(room, _)| room.as_str());
        self.touch(query, rooms)
    }

    /// Where to go on in `room`, whose numbering stands at `current`
    /// though this node has delivered more: either Redis lost the last
    /// lines (a failover to a replica that had not received them yet, or
    /// a restart from a file a moment old), or the room's keys lapsed
    /// while this node could not renew them and a new numbering started.
    ///
    /// They lapse only after [`LinkSettings::room_ttl`] without a renewal,
    /// and this node renewed its rooms at most a third of that before its
    /// link went down: an outage shorter than half of it cannot have let
    /// them lapse. Then the numbers above `current` that this node showed
    /// were real lines that Redis lost, and those Redis gives them next are
    /// new ones: it goes on at `current + 1`, without showing the room's
    /// history again. Only after a longer outage is the numbering taken
    /// as new (from 1: what was said since is delivered). Lines of the lost
    /// stretch that this node never received are lost without a
    /// [`Delivery::Missed`]: nothing is left to tell they were said.
    pub(super) fn went_back(&self, room: &str, current: u64) -> u64 {
        let lapse_possible = self
            .down_since
            .is_some_and(|since| since.elapsed() >= self.target.settings.room_ttl / 2);
        if lapse_possible {
            log::info!("room {room}: Redis forgot it meanwhile; numbering starts over");
            1
        } else {
            log::warn!(
                "redis {}: room {room}: its numbering went back to {current}: \
                 Redis lost its last lines",
                self.target.addr
            );
            current + 1
        }
    }

    /// Gives the keys of `rooms`, which have members here, their full
    /// expiry again ([`LinkSettings::room_ttl`]): a room lapses only once
    /// no node has been in it, nor anyone spoken there, for that long.
    pub(super) fn touch<'r>(
        &self,
        query: &mut Router,
        rooms: impl Iterator<Item = &'r str>,
    ) -> Result<(), SubscriberEnd> {
        let ttl = millis(self.target.settings.room_ttl);
        // On a cluster, a pipeline per master: each its rooms.
        let mut by_shard: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        for room in rooms {
            let shard = query
                .shard_of(&channel(room))
                .map_err(|error| lost(&self.target, error))?;
            by_shard.entry(shard).or_default().push(room);
        }
        let hash = self.touch_script.get_hash();
        for chunk in by_shard
            .values()
            .flat_map(|rooms| rooms.chunks(TOUCH_CHUNK))
        {
            let mut pipe = redis::pipe();
            for &room in chunk {
                let keys = Keys::of(room);
                let all = keys.all();
                pipe.cmd("EVALSHA").arg(hash).arg(all.len());
                for key in all {
                    pipe.arg(key);
                }
                pipe.arg(ttl).ignore();
            }
            match pipe.exec(query) {
                // A Redis that restarted, or whose scripts were flushed,
                // has forgotten it: load it, and renew these rooms again.
                Err(error)
                    if error.kind() == ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    self.touch_script
                        .load(query)
                        .map_err(|error| lost(&self.target, error))?;
                    pipe.exec(query)
                        .map_err(|error| lost(&self.target, error))?;
                }
                // A slot half moved, with a room's keys split between the
                // two nodes: these rooms are renewed at the next round,
                // long before they could lapse.
                Err(error)
                    if error.kind() == ErrorKind::Server(redis::ServerErrorKind::TryAgain) =>
                {
                    log::debug!("redis {}: renewal put off: {error}", self.target.addr);
                }
                done => done.map_err(|error| lost(&self.target, error))?,
            }
        }
        Ok(())
    }

    /// `room`'s last lines up to `current`, and its topic.
    pub(super) fn recent(
        &mut self,
        query: &mut Router,
        room: &str,
        current: u64,
    ) -> Result<Delivery, SubscriberEnd> {
        let keys = Keys::of(room);
        let count = self.target.settings.recent;
        // Newest first, until `count` lines: the markers of the rules
        // among them are not lines, and do not count. An entry holds at
        // least one line, so no more entries than lines are asked for.
        let mut lines = Vec::new();
        let mut end = current;
        while lines.len() < count && end > 0 {
            let want = count - lines.len();
            let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
                .arg(&keys.history)
                .arg(format!("{end}-0"))
                .arg("-")
                .arg("COUNT")
                .arg(want)
                .query(query)
                .map_err(|error| lost(&self.target, error))?;
            let read = entries.len();
            // Entries are numbered `FIRST-0`: the next page ends before the last.
            end = entries
                .last()
                .and_then(|(id, _)| first_of(id))
                .map_or(0, |first| first.saturating_sub(1));
            for (_, fields) in &entries {
                let Some(held) = entry_lines(fields) else {
                    continue;
                };
                let newest_first = held.into_iter().rev();
                let kept = newest_first.filter(|line| marker_version(line).is_none());
                lines.extend(kept.take(count - lines.len()).map(str::to_owned));
            }
            if read < want {
                break;
            }
        }
        lines.reverse();
        let topic: Option<String> = redis::cmd("GET")
            .arg(&keys.topic)
            .query(query)
            .map_err(|error| lost(&self.target, error))?;
        let rules = self.read_rules(query, room)?;
        self.rules_seen.insert(room.to_owned(), rules.version);
        Ok(Delivery::Recent {
            room: room.to_owned(),
            lines,
            topic,
            rules,
        })
    }

    /// A batch of lines arrived on `room`'s channel, numbered from
    /// `first`: delivered from the next this node expects (what it had
    /// already is cut off, one wholly had is dropped), after the gap
    /// before it, if any, is filled from the history.
    pub(super) fn on_message(
        &mut self,
        query: &mut Router,
        room: &str,
        bytes: &[u8],
    ) -> Result<(), SubscriberEnd> {
        // Not (or no longer) a room of ours: a leftover of a leave.
        let Some(&next) = self.next.get(room) else {
            return Ok(());
        };
        let Some((first, node, lines)) = parse_payload(bytes) else {
            log::warn!("redis {}: room {room}: malformed message", self.target.addr);
            return Ok(());
        };
        let last = first + lines.len() as u64 - 1;
        let next =
            if first == 1 && next > 1 && self.started_over(query, room, next, node, &lines)? {
                log::warn!(
                    "redis {}: room {room}: its keys lapsed, its lines are numbered from 1 again",
                    self.target.addr
                );
                1
            } else {
                next
            };
        let after = last + 1;
        if after <= next {
            return Ok(());
        }
        if first > next {
            self.fill(query, room, next, first - 1)?;
        }
        let from = first.max(next);
        let cut = usize::try_from(from - first).unwrap_or(usize::MAX);
        self.entry(query, room, from, node, &lines[cut..])?;
        self.next.insert(room.to_owned(), after);
        Ok(())
    }

    /// Whether `room`'s numbering started over since this node expected
    /// `next`, given a message of lines from 1 (`node`'s `lines`): its
    /// keys lapsed (renewals that did not reach Redis in time), so its
    /// counter is below what was delivered already, and the message is
    /// the new numbering's first entry (a batch, or a rules marker: both
    /// scripts keep it before they publish it). A message of the old
    /// numbering read late, after the keys went, is not: its lines came
    /// already. Two cases go unseen. A new numbering whose counter has
    /// already reached what was delivered when its line 1 is read is
    /// taken for the old one going on: its lines up to there are lost,
    /// without a [`Delivery::Missed`]. And once the new numbering's entry 1
    /// is trimmed, the two cannot be told apart: a message from 1 is taken
    /// for the new numbering's if the counter has reached its lines, so an
    /// old one read that late is delivered again. Asked only of a line 1
    /// that comes late, which is otherwise rare (one read with the room's
    /// past as it was joined), so it costs the path of a line nothing.
    fn started_over(
        &mut self,
        query: &mut Router,
        room: &str,
        next: u64,
        node: &str,
        lines: &[&str],
    ) -> Result<bool, SubscriberEnd> {
        let current = current_seq(query, room).map_err(|error| lost(&self.target, error))?;
        if current + 1 >= next {
            return Ok(false);
        }
        let first: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(Keys::of(room).history)
            .arg("1-0")
            .arg("1-0")
            .query(query)
            .map_err(|error| lost(&self.target, error))?;
        Ok(match first.first() {
            Some((_, fields)) => {
                fields.get("node").map(String::as_str) == Some(node)
                    && entry_lines(fields).as_deref() == Some(lines)
            }
            None => current >= lines.len() as u64,
        })
    }

    /// Delivers lines `from..=to` of `room` from its history, saying which
    /// it no longer has. The first entry read is the one holding `from`
    /// (the last that starts at or before it), cut to start there.
    pub(super) fn fill(
        &mut self,
        query: &mut Router,
        room: &str,
        from: u64,
        to: u64,
    ) -> Result<(), SubscriberEnd> {
        let history = Keys::of(room).history;
        let holding: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
            .arg(&history)
            .arg(format!("{from}-0"))
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(query)
            .map_err(|error| lost(&self.target, error))?;
        let mut start = holding
            .first()
            .and_then(|(id, _)| first_of(id))
            .unwrap_or(from);
        let mut expected = from;
        while expected <= to {
            let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
                .arg(&history)
                .arg(format!("{start}-0"))
                .arg(format!("{to}-0"))
                .arg("COUNT")
                .arg(FILL_CHUNK)
                .query(query)
                .map_err(|error| lost(&self.target, error))?;
            let done = entries.len() < FILL_CHUNK;
            for (id, fields) in &entries {
                let (Some(first), Some(lines)) = (first_of(id), entry_lines(fields)) else {
                    continue;
                };
                let after = first + lines.len() as u64;
                // Had already. (Past `to` only if entries overlap, which
                // no script writes: the range ends at `to`.)
                if after <= expected || expected > to {
                    continue;
                }
                if first > expected {
                    self.send(Delivery::Missed {
                        room: room.to_owned(),
                        from: expected,
                        to: first - 1,
                    })?;
                    expected = first;
                }
                // Cut to what is wanted: from `expected`, up to `to`.
                let skip = usize::try_from(expected - first).unwrap_or(usize::MAX);
                let end = after.min(to + 1);
                let take = usize::try_from(end - expected).unwrap_or(usize::MAX);
                let field = fields.get("node").map_or("", String::as_str);
                let wanted: Vec<&str> = lines.into_iter().skip(skip).take(take).collect();
                self.entry(query, room, expected, field, &wanted)?;
                expected = end;
            }
            // Entries never overlap: the next starts after the last read.
            match entries.last().and_then(|(id, _)| first_of(id)) {
                Some(last) if !done => start = last + 1,
                _ => break,
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
    pub(super) fn send(&self, delivery: Delivery) -> Result<(), SubscriberEnd> {
        if !self.deliver.send(delivery) {
            return Err(SubscriberEnd::Stop);
        }
        self.shared.delivered.add(1);
        Ok(())
    }
}

/// The first seq of a history entry, from its id `FIRST-0`.
pub(super) fn first_of(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

/// The lines of a history entry, oldest first: a batch (the field
/// `lines`, [`frame`]d), or one line (`line`: a rules marker, or an entry
/// written before batches); `None` if it has neither, or they are not
/// framed.
pub(super) fn entry_lines(fields: &HashMap<String, String>) -> Option<Vec<&str>> {
    match (fields.get("lines"), fields.get("line")) {
        (Some(framed), _) => unframe(framed).filter(|lines| !lines.is_empty()),
        (None, Some(line)) => Some(vec![line.as_str()]),
        (None, None) => None,
    }
}

//! One connection's life on the server: its tracker, its handshake thread
//! (the TLS handshake, a writer shard, a seat), and its reading thread,
//! which hands its lines to the hub. Not the accept loop or shutdown.

// The server's types, limits and helpers, which this part shares.
use super::*;
use crate::line::Frame;

/// Lives as long as the connection: shared by the client's thread and, once
/// it registers, its writer shard. Counts the connection as open, adds up
/// its traffic, and when both are done with it, logs it and lets it go.
pub(super) struct Tracker {
    id: ClientId,
    peer: SocketAddr,
    connections: Arc<Connections>,
    /// Whether it was counted against its address.
    per_ip: bool,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Dropped with the tracker; see [`Running`]'s `alive`.
    _alive: Sender<()>,
}

impl Tracker {
    /// Counts a new connection, already counted per address if the server
    /// does that (see `Server::has_room`), as open until the tracker drops.
    pub(super) fn new(
        id: ClientId,
        peer: SocketAddr,
        socket: &Arc<TcpStream>,
        server: &Server,
        running: &Running,
    ) -> Tracker {
        server.connections.add(id, Arc::clone(socket));
        Tracker {
            id,
            peer,
            connections: Arc::clone(&server.connections),
            per_ip: server.limits.max_per_ip.is_some(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            _alive: running.alive.clone(),
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        log::info!(
            "{} {}: closed, {} bytes in, {} bytes out",
            self.id,
            self.peer,
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed)
        );
        self.connections
            .remove(self.id, self.peer.ip(), self.per_ip);
    }
}

/// A new connection on its handshake thread: what the TLS handshake and the
/// setup after it need, and what it hands on to the connection's
/// [`Reader`].
pub(super) struct Handshake {
    /// Who the connection is (its id and address), and its counts.
    pub(super) tracker: Arc<Tracker>,
    pub(super) socket: Arc<TcpStream>,
    pub(super) tls: Arc<ServerConfig>,
    pub(super) limits: Limits,
    /// The hub holds the receiving end.
    pub(super) events: queue::Sender<Event>,
    /// The writer shard that will send to this client.
    pub(super) shard: Shard,
    pub(super) shard_index: usize,
    pub(super) seats: Arc<Seats>,
    /// What a refusal line is charged to.
    pub(super) budget: Arc<Budget>,
    /// Where the reading thread comes from.
    pub(super) readers: Pool,
}

impl Handshake {
    /// Runs on a handshake thread (see `HANDSHAKE_STACK`): the TLS
    /// handshake, then a writer shard and a seat; then a reading thread
    /// takes the connection for the rest of its life.
    pub(super) fn run(self) {
        let (id, peer) = (self.tracker.id, self.tracker.peer);
        let conn = match self.handshake() {
            Ok(conn) => conn,
            Err(reason) => return log::info!("{id} {peer}: closed before joining: {reason}"),
        };
        log::info!("{id} {peer}: connected, {}", tls::describe(&conn));
        let certificate = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| PeerCertificate {
                subject: x509::subject(leaf).unwrap_or_default(),
                common_name: x509::common_name(leaf),
                key: Fingerprint::of_certificate(leaf),
            });
        let (read_half, write_half) = duplex::split(conn, Arc::clone(&self.socket));
        let fate = Arc::new(Fate::default());
        let tracker = Arc::clone(&self.tracker);
        let registration = Registration {
            id,
            peer,
            write: write_half,
            fate: Arc::clone(&fate),
            on_done: Box::new(move |sent| tracker.bytes_out.store(sent, Ordering::Relaxed)),
        };
        self.tracker.connections.chatting(id);
        // Fails only if the server is stopping and the shard has ended.
        let Ok(slot) = self.shard.register(registration) else {
            return;
        };
        // The hub hears of an admitted client (and takes its seat) before
        // any of its lines.
        let admission = match self.seats.take(peer.ip()) {
            Ok(seat) => Ok(Box::new(Event::Ready {
                id,
                peer,
                address: Address {
                    shard: self.shard_index,
                    slot,
                },
                certificate,
                seat,
            })),
            Err(no_seat) => {
                self.tracker
                    .connections
                    .counters
                    .refused(if no_seat.server_full {
                        Refused::ServerFull
                    } else {
                        Refused::TooManyFromAddress
                    });
                Err(self.refusal(no_seat.told))
            }
        };
        // Reading can make rustls queue a reply (to a key update); only the
        // shard writes, so it is asked to send it.
        let flusher = self.shard.clone();
        let flush = move || flusher.send(Work::Flush(slot));
        let reader = Box::new(Reader {
            id,
            lines: LineReader::new(read_half, self.limits.max_line, flush),
            bucket: self
                .limits
                .rate
                .map(|rate| TokenBucket::new(rate, Instant::now())),
            warned: false,
            overslept: Duration::ZERO,
            disconnect: Disconnect::Shutdown,
            events: self.events,
            shard: self.shard.clone(),
            slot,
            fate,
            tracker: self.tracker,
        });
        let started = self.readers.run(move || match admission {
            Ok(ready) => reader.chat(ready),
            Err(line) => reader.refuse(line),
        });
        if let Err(err) = started {
            log::error!("{id} {peer}: dropped: cannot start a thread: {err}");
            // Turned away: its reading thread never ran, so nothing
            // counts it as a disconnect.
            close(&self.shard, slot, CloseReason::Refused);
        }
    }

    /// The TLS handshake, with its deadline.
    fn handshake(&self) -> Result<Connection, String> {
        let counters = &self.tracker.connections.counters;
        let mut conn = ServerConnection::new(Arc::clone(&self.tls))
            .map(Connection::Server)
            .map_err(|err| {
                counters.handshake_not_started();
                format!("TLS setup failed: {err}")
            })?;
        duplex::handshake(&mut conn, &self.socket, self.limits.handshake_timeout).map_err(
            |err| {
                counters.handshake_failed(&err);
                format!("handshake failed: {err}")
            },
        )?;
        counters.handshake_done();
        Ok(conn)
    }

    /// A client the server has no place for: the line that tells it why.
    fn refusal(&self, why: String) -> Outgoing {
        log::info!("{} {}: refused: {why}", self.tracker.id, self.tracker.peer);
        Outgoing::new(ServerLine::Error(&why).to_wire(), &self.budget)
    }
}

/// A connection after its handshake, on its reading thread: reads its
/// lines and hands them to the hub, for the life of the connection.
pub(super) struct Reader {
    id: ClientId,
    lines: LineReader,
    /// Flood control, if the server limits rates.
    bucket: Option<TokenBucket>,
    /// The client was told it is too fast, and has not slowed down since.
    warned: bool,
    /// How much later than asked this thread woke from its last wait for
    /// the rate. A loaded machine can oversleep by more than the bucket
    /// takes to refill; that time is the server's, not a pause of the
    /// client's, so it does not end the flood the client was told of.
    overslept: Duration,
    /// Why reading ended, as the metrics count it, unless the shard cut it.
    disconnect: Disconnect,
    /// The hub holds the receiving end.
    events: queue::Sender<Event>,
    /// Told when the reader ends, and, for a refused client, why.
    shard: Shard,
    slot: Slot,
    /// Why the shard cut the connection, if it did.
    fate: Arc<Fate>,
    tracker: Arc<Tracker>,
}

impl Reader {
    /// The chat: the hub first hears of the client, then of each of its
    /// lines, then of its end.
    ///
    /// The reader and its first event come on the heap, and each step
    /// that builds an [`Event`] or a reason runs in a call of its own, gone
    /// from the stack before the read waits again: the frames around the
    /// read's wait, and above rustls' decryption beneath it, hold little.
    /// That keeps a fresh thread that has read a line to two stack pages
    /// instead of three (BENCHMARKS.md, "Toward 14 KiB"); a pooled thread
    /// keeps whatever an earlier connection's end touched.
    fn chat(mut self: Box<Self>, ready: Box<Event>) {
        if !self.admit(ready) {
            // The hub has stopped: nobody will chat with this client.
            return close(&self.shard, self.slot, CloseReason::Shutdown);
        }
        let reason = self.read();
        self.leave(reason);
    }

    /// Tells the hub of the client; false if the hub has stopped.
    // Boxed so that the event is unboxed in this frame, which is gone
    // before the read loop starts, not in the caller's, which stays.
    #[allow(clippy::boxed_local)]
    #[inline(never)]
    fn admit(&self, ready: Box<Event>) -> bool {
        self.events.send(*ready).is_ok()
    }

    /// The read loop; returns why the connection ended.
    #[inline(never)]
    fn read(&mut self) -> String {
        loop {
            let frame = match self.lines.next_line() {
                Ok(frame) => frame,
                Err(end) => return self.ended(end),
            };
            if let Some(reason) = self.hand_on(frame) {
                return reason;
            }
        }
    }

    /// Hands one line to the hub, at the rate allowed; returns why the
    /// connection ends, if it does.
    #[inline(never)]
    fn hand_on(&mut self, frame: Frame) -> Option<String> {
        // Flood control may hold a line for a long time: what the shard or
        // the hub decided meanwhile counts.
        self.keep_to_rate();
        if let Some(cut) = self.fate.cut_reason() {
            return Some(cut.to_string());
        }
        let line = Event::Frame { id: self.id, frame };
        if self.events.send(line).is_err() {
            return Some("the server is stopping".to_string());
        }
        None
    }

    /// Reading ended: notes how, for the metrics, and says why.
    #[cold]
    #[inline(never)]
    fn ended(&mut self, end: End) -> String {
        self.disconnect = Disconnect::of_read(&end);
        match end {
            End::Closed => "client closed the connection".to_string(),
            end => end.to_string(),
        }
    }

    /// Flood control, before each line goes to the hub: takes the line's
    /// token, and if there was none, slows down.
    fn keep_to_rate(&mut self) {
        let Some(bucket) = &mut self.bucket else {
            return;
        };
        let now = Instant::now();
        let overslept = std::mem::take(&mut self.overslept);
        // Full again since the warning: the next flood is told anew. (Only
        // asked while a warning stands: most lines come with none.)
        if self.warned && bucket.is_full(now - overslept) {
            self.warned = false;
        }
        let wait = bucket.take(now);
        if !wait.is_zero() {
            self.slow_down(wait);
        }
    }

    /// Waits as long as the rate limit asks, and tells the client once per
    /// flood. Not reading meanwhile is the point: the client's sends back
    /// up into its own TCP connection.
    fn slow_down(&mut self, wait: Duration) {
        if !self.warned {
            let _ = self.events.send(Event::Throttled { id: self.id });
            self.warned = true;
        }
        self.tracker.connections.counters.flood_wait(wait);
        let due = Instant::now() + wait;
        thread::sleep(wait);
        self.overslept = Instant::now().saturating_duration_since(due);
    }

    /// The connection ended: the hub hears why (the shard's reason, if it
    /// cut it), and the shard lets it go.
    ///
    /// Never inlined: reading away what a failed peer still sends takes a
    /// 4 KiB buffer on the stack. Inlined into [`Reader::chat`], that
    /// buffer was part of the frame under which the whole read loop runs,
    /// so every reading thread touched one more stack page, resident for
    /// as long as the thread lives.
    #[inline(never)]
    fn leave(mut self: Box<Self>, mut reason: String) {
        let mut public = None;
        if let Some(cut) = self.fate.cut_reason() {
            reason = cut.to_string();
            if self.fate.too_slow() {
                public = Some("too slow");
            }
        }
        // What the server did comes first: the peer only answered it. A
        // cut for being too slow is the first reason; then a stop (which
        // cuts those slow to hang up); then the chat's reason for a close
        // by the hub, even when the client was then cut for not hanging up
        // (a flooder being killed reads its lines one token at a time, so
        // its answer to the close can come after the linger); then any
        // other cut; then what reading saw.
        let stopping = self.tracker.connections.is_stopping();
        let cut = self.fate.cut_as();
        let disconnect = match cut {
            Some(cut) if self.fate.too_slow() => cut,
            _ if stopping => Disconnect::Shutdown,
            _ => self
                .fate
                .closed_by_hub()
                .and_then(Disconnect::of_close)
                .or(cut)
                .unwrap_or(self.disconnect),
        };
        self.tracker.connections.counters.disconnected(disconnect);
        let gone = Event::Gone {
            id: self.id,
            reason,
            public,
        };
        // Nothing depends on the hub to tell the shard: if the hub is
        // stopping, or has failed, the shard still lets the client go.
        let _ = self.events.send(gone);
        // After a TLS failure the shard sends the alert and lingers: until
        // the peer hangs up, what it still sends is read and dropped.
        self.lines.discard_if_failed();
        self.done_reading();
    }

    /// The end of reading: the bytes it read are counted (after any read
    /// away), and the shard told it may let the connection go.
    fn done_reading(&self) {
        self.tracker
            .bytes_in
            .store(self.lines.bytes_received(), Ordering::Relaxed);
        self.shard.send(Work::ReaderDone(self.slot));
    }

    /// A client the server has no place for: its shard sends it the reason
    /// and closes; meanwhile whatever it sends is read and dropped, so that
    /// it reads the reason before the connection ends.
    fn refuse(mut self: Box<Self>, line: Outgoing) {
        self.shard.send(Work::Deliver {
            line,
            to: To::One(self.slot),
        });
        self.shard
            .send(Work::Close(self.slot, CloseReason::Refused));
        while self.lines.next_line().is_ok() {}
        self.done_reading();
    }
}

/// Closes a connection whose reader never ran or will relay nothing, as
/// the hub would have, for `why`.
fn close(shard: &Shard, slot: Slot, why: CloseReason) {
    shard.send(Work::Close(slot, why));
    shard.send(Work::ReaderDone(slot));
}

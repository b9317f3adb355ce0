//! One connection's life on the server: its tracker, its handshake
//! thread (the TLS handshake, admission, registration with a shard), and
//! its reading thread, which hands its lines to the hub. Not the accept
//! loop or shutdown (the server's `run`).

// The server's types, limits and helpers, which this part shares.
use super::*;

/// Lives as long as the connection: shared by the client's thread and, once
/// it registers, its writer shard. Counts the connection as open, adds up
/// its traffic, and when both are done with it, logs it and lets it go.
pub(super) struct Tracker {
    id: ClientId,
    peer: SocketAddr,
    open: Arc<AtomicUsize>,
    /// Set when connections are counted per address.
    per_ip: Option<PerIp>,
    sockets: Arc<Sockets>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Dropped with the tracker; see [`Server::run`].
    _alive: Sender<()>,
}

impl Tracker {
    pub(super) fn new(
        id: ClientId,
        peer: SocketAddr,
        per_ip: Option<PerIp>,
        open: &Arc<AtomicUsize>,
        sockets: Arc<Sockets>,
        alive: Sender<()>,
    ) -> Tracker {
        open.fetch_add(1, Ordering::SeqCst);
        Tracker {
            id,
            peer,
            open: Arc::clone(open),
            per_ip,
            sockets,
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            _alive: alive,
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
        self.sockets.remove(self.id);
        if let Some(per_ip) = &self.per_ip {
            let mut counts = lock(per_ip);
            let ip = self.peer.ip();
            if let Some(count) = counts.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&ip);
                }
            }
        }
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A new connection on its handshake thread: what the TLS handshake and the
/// setup after it need, and what it hands on to the connection's
/// [`Reader`].
pub(super) struct Handshake {
    pub(super) id: ClientId,
    pub(super) peer: SocketAddr,
    pub(super) socket: Arc<TcpStream>,
    pub(super) tls: Arc<ServerConfig>,
    pub(super) limits: Limits,
    /// The hub holds the receiving end.
    pub(super) events: queue::Sender<Event>,
    /// The writer shard that will send to this client.
    pub(super) shard: Shard,
    pub(super) shard_index: usize,
    pub(super) sockets: Arc<Sockets>,
    pub(super) seats: Arc<Seats>,
    /// What a refusal line is charged to.
    pub(super) budget: Arc<Budget>,
    pub(super) tracker: Arc<Tracker>,
    /// Where the reading thread comes from.
    pub(super) readers: Pool,
}

impl Handshake {
    /// Runs on a handshake thread: the TLS handshake and the setup after
    /// it; then it hands the connection to a reading thread, which reads
    /// for the rest of the connection, and is free for the next handshake.
    ///
    /// A thread keeps what it has touched for as long as it lives: the
    /// stack pages of the handshake's deep cryptography, and the blocks its
    /// allocator caches for it (glibc keeps up to seven freed blocks of
    /// each size per thread, about 9 KiB of the handshake's leftovers).
    /// For an idle client that would be most of its memory; a reading
    /// thread, which never handshakes, has neither.
    pub(super) fn run(self) {
        let (id, peer) = (self.id, self.peer);
        let self_readers = self.readers.clone();
        let Some(reader) = self.join() else {
            return;
        };
        let (shard, slot) = (reader.shard.clone(), reader.slot);
        if let Err(err) = self_readers.run(move || reader.run()) {
            log::error!("{id} {peer}: dropped: cannot start a thread: {err}");
            // The reader never ran: close as the hub would have.
            shard.send(Work::Close(slot));
            shard.send(Work::ReaderDone(slot));
        }
    }

    /// The TLS handshake, then the writing half to a shard. Returns the
    /// reader, or `None` if the client never got that far.
    fn join(self) -> Option<Reader> {
        let (id, peer) = (self.id, self.peer);
        let conn = match self.handshake() {
            Ok(conn) => conn,
            Err(reason) => {
                log::info!("{id} {peer}: closed before joining: {reason}");
                return None;
            }
        };
        log::info!("{id} {peer}: connected, {}", tls::describe(&conn));
        let certificate = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| PeerCertificate {
                subject: x509::subject(leaf).unwrap_or_default(),
                common_name: x509::common_name(leaf),
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
        self.sockets.chatting(id);
        // Fails only if the server is stopping and the shard has ended.
        let slot = self.shard.register(registration).ok()?;
        let address = Address {
            shard: self.shard_index,
            slot,
        };
        let admission = match self.seats.take(peer.ip()) {
            Ok(seat) => Admission::Admitted(Event::Ready {
                id,
                peer,
                address,
                certificate,
                seat,
            }),
            Err(why) => Admission::Refused {
                peer,
                line: Outgoing::new(ServerLine::Error(&why).to_wire(), &self.budget),
                why,
            },
        };
        // Reading can make rustls queue a reply (to a key update); only the
        // shard writes, so it is asked to send it.
        let flusher = self.shard.clone();
        let flush = move || flusher.send(Work::Flush(slot));
        Some(Reader {
            id,
            admission: Some(admission),
            lines: LineReader::new(read_half, self.limits.max_line, flush),
            bucket: self
                .limits
                .rate
                .map(|rate| TokenBucket::new(rate, Instant::now())),
            warned: false,
            events: self.events,
            shard: self.shard,
            slot,
            fate,
            tracker: self.tracker,
        })
    }

    /// The TLS handshake, with its deadline.
    fn handshake(&self) -> Result<Connection, String> {
        let mut conn = ServerConnection::new(Arc::clone(&self.tls))
            .map(Connection::Server)
            .map_err(|err| format!("TLS setup failed: {err}"))?;
        duplex::handshake(&mut conn, &self.socket, self.limits.handshake_timeout)
            .map_err(|err| format!("handshake failed: {err}"))?;
        Ok(conn)
    }
}

/// What the server decided about a client after its handshake.
pub(super) enum Admission {
    /// It may chat: the hub hears of it first (and takes its seat), before
    /// any of its lines.
    Admitted(Event),
    /// No place for it; `line` tells it why.
    Refused {
        peer: SocketAddr,
        why: String,
        line: Outgoing,
    },
}

/// A connection after its handshake, on its reading thread: reads its
/// lines and hands them to the hub, for the life of the connection.
pub(super) struct Reader {
    id: ClientId,
    /// Whether the client may chat; taken when the reading thread starts.
    admission: Option<Admission>,
    lines: LineReader,
    /// Flood control, if the server limits rates.
    bucket: Option<TokenBucket>,
    /// The client was told it is too fast, and has not slowed down since.
    warned: bool,
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
    /// Joins the chat, reads until the connection ends, then tells the hub
    /// and the shard.
    pub(super) fn run(mut self) {
        let ready = match self.admission.take() {
            Some(Admission::Admitted(ready)) => return self.chat(ready),
            Some(Admission::Refused { peer, why, line }) => (peer, why, line),
            None => return,
        };
        self.refuse(ready);
    }

    /// A client the server has no place for: its shard sends it the reason
    /// and closes; meanwhile whatever it sends is read and dropped, so that
    /// it reads the reason before the connection ends.
    fn refuse(mut self, (peer, why, line): (SocketAddr, String, Outgoing)) {
        log::info!("{} {peer}: refused: {why}", self.id);
        self.shard.send(Work::Deliver {
            line,
            to: To::One(self.slot),
        });
        self.shard.send(Work::Close(self.slot));
        while self.lines.next_line().is_ok() {}
        self.tracker
            .bytes_in
            .store(self.lines.bytes_received(), Ordering::Relaxed);
        self.shard.send(Work::ReaderDone(self.slot));
    }

    /// The chat: the hub first hears of the client, then of each of its
    /// lines, then of its end.
    fn chat(mut self, ready: Event) {
        if self.events.send(ready).is_err() {
            // The hub has stopped: nobody will chat with this client.
            self.shard.send(Work::Close(self.slot));
            self.shard.send(Work::ReaderDone(self.slot));
            return;
        }
        let mut reason = self.read();
        self.tracker
            .bytes_in
            .store(self.lines.bytes_received(), Ordering::Relaxed);
        let mut public = None;
        if let Some(cut) = self.fate.cut_reason() {
            reason = cut.to_string();
            if self.fate.too_slow() {
                public = Some("too slow");
            }
        }
        let gone = Event::Gone {
            id: self.id,
            reason,
            public,
        };
        // Nothing depends on the hub to tell the shard: if the hub is
        // stopping, or has failed, the shard still lets the client go.
        let _ = self.events.send(gone);
        self.shard.send(Work::ReaderDone(self.slot));
    }

    /// The read loop; returns why the connection ended.
    fn read(&mut self) -> String {
        loop {
            let frame = match self.lines.next_line() {
                Ok(frame) => frame,
                Err(End::Closed) => return "client closed the connection".to_string(),
                Err(end) => return end.to_string(),
            };
            // Flood control may hold a line for a long time: what the
            // shard or the hub decided meanwhile counts.
            self.keep_to_rate();
            if let Some(cut) = self.fate.cut_reason() {
                return cut.to_string();
            }
            if self
                .events
                .send(Event::Frame { id: self.id, frame })
                .is_err()
            {
                return "the server is stopping".to_string();
            }
        }
    }

    /// Flood control, before each line goes to the hub: waits as long as
    /// the rate limit asks, and tells the client once per flood.
    fn keep_to_rate(&mut self) {
        let Some(bucket) = &mut self.bucket else {
            return;
        };
        let now = Instant::now();
        if bucket.is_full(now) {
            self.warned = false;
        }
        let wait = bucket.take(now);
        if wait.is_zero() {
            return;
        }
        if !self.warned {
            let _ = self.events.send(Event::Throttled { id: self.id });
            self.warned = true;
        }
        // Not reading meanwhile is the point: the client's sends back up
        // into its own TCP connection.
        thread::sleep(wait);
    }
}

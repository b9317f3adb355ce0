//! Reading threads that each serve thousands of clients: non-blocking
//! sockets, one `mio` poll per thread, rustls fed by hand.
//!
//! The server under test holds a thread per client; the bench must not, or
//! it would run out of threads first and measure itself. A client lives
//! on one poller from the end of its handshake to its close; the poller
//! decrypts, frames and checks its lines, sends its close_notify, and
//! hands back its report. Sockets here are the bench's own, so they may be
//! non-blocking; clients that send are not polled (see `connect`).

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::event::Event;
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::Connection;
use secure_chat::client::MAX_SERVER_LINE;
use secure_chat::line::{Frame, LineFramer};

use crate::check::{Checker, ClientReport, End, Note, RunFlags};

/// The token of the poller's waker; client tokens are slot numbers.
const WAKER: Token = Token(usize::MAX);
/// Longest sleep in `poll`: how soon a poller notices the deadline.
const TICK: Duration = Duration::from_millis(100);
/// Events taken per `poll` call.
const EVENTS: usize = 1024;
/// Bytes read from one socket per turn. A busy client gets one read per
/// turn and then waits for the others: reading one until it ran dry
/// would let the server refill it meanwhile, and the clients behind it
/// would fall behind far enough for a server to cut them as too slow.
const TURN: usize = 64 * 1024;

/// A client whose handshake is done, for a poller to take over.
pub struct NewClient {
    /// The TLS state after the handshake.
    pub conn: Connection,
    /// Its socket, still blocking: the poller makes it non-blocking.
    pub socket: TcpStream,
    /// What to check, and where to report.
    pub checker: Checker,
    /// Never read until closing (slow mode); only watch for a cut.
    pub stalled: bool,
}

/// What the main thread asks of a poller.
enum Command {
    /// Take over a client.
    Add(Box<NewClient>),
    /// Send close_notify on every connection; keep reading their ends.
    Close,
    /// Cut whatever is still open and return every report.
    Finish,
}

/// One reading thread, seen from the main thread.
pub struct Poller {
    /// To the thread.
    commands: Sender<Command>,
    /// Wakes the thread's poll when a command is queued.
    waker: Arc<Waker>,
    /// The thread, which returns the reports of all its clients.
    thread: JoinHandle<Vec<ClientReport>>,
}

impl Poller {
    /// Starts a poller thread; `epoch` is the zero of latency timestamps.
    pub fn start(name: String, epoch: Instant, flags: Arc<RunFlags>) -> io::Result<Poller> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (commands, inbox) = crossbeam_channel::unbounded();
        let thread = thread::Builder::new().name(name).spawn(move || {
            let mut state = State {
                poll,
                slots: Vec::new(),
                reports: Vec::new(),
                frames: Vec::new(),
                buf: vec![0; TURN],
                ready: VecDeque::new(),
                epoch,
                flags,
                cut_all: false,
            };
            state.run(&inbox)
        })?;
        Ok(Poller {
            commands,
            waker,
            thread,
        })
    }

    /// Hands a client over.
    pub fn add(&self, client: NewClient) -> Result<(), String> {
        self.send(Command::Add(Box::new(client)))
    }

    /// Starts closing every client.
    pub fn close(&self) {
        // A poller that has ended has no clients left to close.
        let _ = self.send(Command::Close);
    }

    /// Cuts what is still open and collects every report.
    pub fn finish(self) -> Vec<ClientReport> {
        let _ = self.send(Command::Finish);
        self.thread.join().unwrap_or_default()
    }

    /// Queues `command` and wakes the thread to take it.
    fn send(&self, command: Command) -> Result<(), String> {
        self.commands
            .send(command)
            .map_err(|_| "a reading thread has ended".to_string())?;
        self.waker
            .wake()
            .map_err(|err| format!("cannot wake a reading thread: {err}"))
    }
}

/// One client on a poller.
struct Slot {
    /// rustls' state.
    conn: Connection,
    /// The non-blocking socket.
    socket: mio::net::TcpStream,
    /// Checks its lines.
    checker: Checker,
    /// Its partial line.
    framer: LineFramer,
    /// Not read until closing; only watched for a reset or hang-up.
    stalled: bool,
    /// A stalled client's cut has been reported.
    cut_seen: bool,
    /// close_notify is queued: shut our direction down once it is sent.
    closing: bool,
    /// Our direction has been shut down.
    write_shut: bool,
}

/// A poller thread's state.
struct State {
    /// The readiness poll.
    poll: Poll,
    /// Clients by token; `None` once ended.
    slots: Vec<Option<Slot>>,
    /// Reports of the clients that have ended.
    reports: Vec<ClientReport>,
    /// Frames of one read, reused.
    frames: Vec<Frame>,
    /// One socket read's bytes, reused by every client of the poller.
    buf: Vec<u8>,
    /// Clients that may have more to read, in turn order.
    ready: VecDeque<usize>,
    /// Zero of latency timestamps.
    epoch: Instant,
    /// Shared with the main thread and the watchdog.
    flags: Arc<RunFlags>,
    /// Set once everything was cut at the deadline.
    cut_all: bool,
}

impl State {
    /// Serves clients until told to finish; returns every report.
    fn run(&mut self, inbox: &Receiver<Command>) -> Vec<ClientReport> {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            // Clients with more to read are served before sleeping again.
            let wait = if self.ready.is_empty() {
                TICK
            } else {
                Duration::ZERO
            };
            if let Err(err) = self.poll.poll(&mut events, Some(wait)) {
                if err.kind() != io::ErrorKind::Interrupted {
                    // Without a poll nothing more can be read: end every
                    // client with the reason, then wait for Finish below.
                    self.end_all(&End::Failed(format!("poll: {err}")));
                    thread::sleep(TICK);
                }
            }
            for event in events.iter() {
                if event.token() != WAKER {
                    self.service(event.token().0, Some(event));
                }
            }
            // One more turn for each client whose last read brought data;
            // those that still have more are queued again, behind the rest.
            for _ in 0..self.ready.len() {
                if let Some(token) = self.ready.pop_front() {
                    self.service(token, None);
                }
            }
            // Commands are taken whatever the events: the waker's event
            // and a command sent just after it may cross.
            loop {
                match inbox.try_recv() {
                    Ok(Command::Add(client)) => self.add(*client),
                    Ok(Command::Close) => self.close_all(),
                    // Finish, or the main thread gave up on this poller
                    // without one: cut what is left and end.
                    Ok(Command::Finish) | Err(TryRecvError::Disconnected) => {
                        self.end_all(&End::Eof);
                        return std::mem::take(&mut self.reports);
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
            if self.flags.expired() && !self.cut_all {
                // The deadline: cut everything, as the watchdog does to
                // the blocking clients, and wait for Finish.
                self.cut_all = true;
                self.end_all(&End::Eof);
            }
        }
    }

    /// Registers a new client and reads what may have come already.
    fn add(&mut self, client: NewClient) {
        let NewClient {
            conn,
            socket,
            checker,
            stalled,
        } = client;
        let token = self.slots.len();
        let setup = socket.set_nonblocking(true).and_then(|()| {
            let mut socket = mio::net::TcpStream::from_std(socket);
            // A stalled client only wants to hear of a reset or hang-up,
            // which every registration reports.
            let interest = if stalled {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            self.poll
                .registry()
                .register(&mut socket, Token(token), interest)
                .map(|()| socket)
        });
        let socket = match setup {
            Ok(socket) => socket,
            Err(err) => {
                let end = End::Failed(format!("poll registration: {err}"));
                self.reports.push(checker.finish(end));
                return;
            }
        };
        self.slots.push(Some(Slot {
            conn,
            socket,
            checker,
            // The library client's limit, as for every reader of the
            // bench. ncat's list of who is connected is one line of about
            // 25 bytes per client: it fits for some 2,500 clients.
            framer: LineFramer::new(MAX_SERVER_LINE),
            stalled,
            cut_seen: false,
            closing: false,
            write_shut: false,
        }));
        if self.cut_all {
            self.end(token, End::Eof);
            return;
        }
        // Lines that came with the handshake's last flight are decrypted
        // already, and the socket may stay silent after them.
        self.service(token, None);
    }

    /// Handles readiness of one client (or, with no event, checks it).
    fn service(&mut self, token: usize, event: Option<&Event>) {
        let Some(slot) = self.slots.get_mut(token).and_then(Option::as_mut) else {
            return;
        };
        if slot.stalled {
            let cut = event.is_some_and(|e| e.is_error() || e.is_read_closed());
            if cut && !slot.cut_seen {
                slot.cut_seen = true;
                let _ = slot
                    .checker
                    .notes()
                    .send(Note::StalledCut { at: Instant::now() });
            }
            return;
        }
        let pumped = pump(slot, &mut self.buf, &mut self.frames, self.epoch);
        slot.checker.flush_progress();
        match pumped {
            Pumped::Drained => {}
            // Queued once: a client already waiting for its turn keeps
            // its place.
            Pumped::More if !self.ready.contains(&token) => self.ready.push_back(token),
            Pumped::More => {}
            Pumped::Ended(end) => self.end(token, end),
        }
    }

    /// Queues close_notify on every client and sends what can be sent.
    fn close_all(&mut self) {
        for token in 0..self.slots.len() {
            let Some(slot) = self.slots[token].as_mut() else {
                continue;
            };
            if slot.stalled {
                // From now on a stalled client reads like any other: what
                // the server still had for it, then the end, which tells
                // whether the server had cut it.
                slot.stalled = false;
                match pump(slot, &mut self.buf, &mut self.frames, self.epoch) {
                    Pumped::Ended(end) => {
                        self.end(token, end);
                        continue;
                    }
                    Pumped::More => self.ready.push_back(token),
                    Pumped::Drained => {}
                }
            }
            slot.conn.send_close_notify();
            slot.closing = true;
            if let Err(err) = flush(slot) {
                self.end(token, End::Failed(err.to_string()));
            }
        }
    }

    /// Ends every client still open with `end`.
    fn end_all(&mut self, end: &End) {
        for token in 0..self.slots.len() {
            if self.slots[token].is_some() {
                self.end(token, end.clone());
            }
        }
    }

    /// Ends one client: deregisters and closes its socket, keeps its report.
    fn end(&mut self, token: usize, end: End) {
        let Some(mut slot) = self.slots.get_mut(token).and_then(Option::take) else {
            return;
        };
        // Closing the socket deregisters it; these calls only make it
        // explicit, and fail only if the socket is already gone.
        let _ = self.poll.registry().deregister(&mut slot.socket);
        let _ = slot.socket.shutdown(Shutdown::Both);
        self.reports.push(slot.checker.finish(end));
    }
}

/// Sends what rustls has queued, as far as the socket takes it; shuts our
/// direction down once a queued close_notify has gone. Unsent bytes wait
/// for the next writable event.
fn flush(slot: &mut Slot) -> io::Result<()> {
    while slot.conn.wants_write() {
        match slot.conn.write_tls(&mut slot.socket) {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    if slot.closing && !slot.write_shut {
        slot.write_shut = true;
        slot.socket.shutdown(Shutdown::Write)?;
    }
    Ok(())
}

/// What one turn of reading found.
enum Pumped {
    /// The socket had nothing more: wait for its next readiness event.
    Drained,
    /// A read brought data: the socket may hold more, for the next turn.
    More,
    /// The connection ended.
    Ended(End),
}

/// Sends what is pending, then reads once from the socket into `buf`
/// and hands it all to rustls; checks every line.
///
/// One `read` of up to [`TURN`] bytes, not rustls' own 4 KiB reads: one
/// system call per turn, and the buffer is the poller's, not each
/// client's.
fn pump(slot: &mut Slot, buf: &mut [u8], frames: &mut Vec<Frame>, epoch: Instant) -> Pumped {
    if let Err(err) = flush(slot) {
        return Pumped::Ended(End::Failed(err.to_string()));
    }
    let read = loop {
        match slot.socket.read(buf) {
            Ok(n) => break n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Pumped::Drained,
            Err(err) => return Pumped::Ended(End::Failed(err.to_string())),
        }
    };
    let mut rest = &buf[..read];
    loop {
        // rustls takes at most one record's worth at a time; at the end
        // of the stream, the empty read tells it so.
        if let Err(err) = slot.conn.read_tls(&mut rest) {
            return Pumped::Ended(End::Failed(format!("TLS: {err}")));
        }
        if let Err(err) = slot.conn.process_new_packets() {
            // rustls has queued an alert saying why; sending it is a
            // courtesy that changes nothing.
            let _ = flush(slot);
            return Pumped::Ended(End::Failed(format!("TLS: {err}")));
        }
        let state = drain(&mut slot.conn, &mut slot.framer, frames);
        // One clock reading per record batch: lines decrypted together
        // arrived together.
        let now = epoch.elapsed();
        for frame in frames.drain(..) {
            slot.checker.take(frame, now);
        }
        match state {
            Ok(Stream::Closed) => return Pumped::Ended(End::CloseNotify),
            Ok(Stream::Eof) => return Pumped::Ended(End::Eof),
            Ok(Stream::Open) if read == 0 => return Pumped::Ended(End::Eof),
            Ok(Stream::Open) => {}
            Err(err) => return Pumped::Ended(End::Failed(err.to_string())),
        }
        if rest.is_empty() {
            break;
        }
    }
    // A reply rustls wants to send (a key update) goes out now.
    match flush(slot) {
        Ok(()) => Pumped::More,
        Err(err) => Pumped::Ended(End::Failed(err.to_string())),
    }
}

/// Where a stream stands after its plaintext has been taken.
enum Stream {
    /// Still open.
    Open,
    /// The server sent close_notify.
    Closed,
    /// The TCP stream ended without close_notify.
    Eof,
}

/// Frames all decrypted bytes, then says where the stream stands.
fn drain(
    conn: &mut Connection,
    framer: &mut LineFramer,
    out: &mut Vec<Frame>,
) -> io::Result<Stream> {
    let mut reader = conn.reader();
    loop {
        match reader.fill_buf() {
            Ok([]) => return Ok(Stream::Closed),
            Ok(bytes) => {
                let n = bytes.len();
                framer.push(bytes, out);
                reader.consume(n);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(Stream::Open),
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(Stream::Eof),
            Err(err) => return Err(err),
        }
    }
}

//! The chat in the shape first asked for: a thread per client owning its
//! rustls `StreamOwned`, and a crossbeam hub thread that fans every line out
//! to every client's channel. Run: `cargo run --example card-chat [ADDR]`.
//! Next: src/lib.rs, the real server's tour; it answers each COST below.
//!
//! It speaks what chat-bench needs of PROTOCOL.md: a greeting (`notice you
//! are guestN`), then every line comes back to everyone, the sender too, as
//! `chat guestN TEXT`. No nicks, rooms or commands.
//!
//! What this shape costs beside chat-server, measured with bench/card-chat.sh
//! (idle figures with chat-bench idle; 2 busy cores; BENCHMARKS.md):
//!
//! COST 1, a line waits for its reader's timeout: the thread that owns a
//! stream looks at its channel only between reads, and READ_TIMEOUT's 10 ms
//! last 13 to 22 ms here (the kernel counts in 4 ms ticks, and a busy machine
//! wakes threads late). Latency p50 10.0 ms, p99 25.8 ms; chat-server's 1.0
//! and 17.7 ms. Its writers wait on epoll, not on a clock (src/shard/).
//!
//! COST 2, a reader blocked in `read` holds the stream: rustls has no
//! separate halves, so nobody else can write to that client meanwhile, and
//! every thread must wake up to write: 1000 idle clients cost half a core
//! (chat-server's: nothing measurable), and a fan-out to 100 clients 0.35
//! µs of server CPU per delivery against 0.115. The real server shares a
//! connection between its reading thread and a writer under a lock never
//! held across a wait (src/duplex/), and one writer thread per core sends
//! to many sockets (src/hub/ hands it each line once, src/shard/).
//!
//! COST 3, one slow reader holds up the hub. Each client's channel is
//! bounded (OUTBOX_LINES): unbounded, a client that never reads would grow
//! the server's memory without end. Full, it makes the hub wait, so the room
//! moves at the pace of its slowest reader, and one that never reads stops
//! everyone until its socket is full (the kernel took 4 MB first) and
//! its sends time out (WRITE_TIMEOUT): beside one such reader, the others
//! took 17.1 s instead of 2.3. Cutting a client as soon as its channel is
//! full would spare the hub, but in a burst every reader is behind, so
//! healthy ones would go. chat-server's others took 1.1 s and its stalled
//! reader was cut at 5.1 s: its writers never wait on one socket, and one
//! policy, src/slow_readers.rs, caps what the kernel holds, keeps a reader
//! that moves however far behind, and slows the senders when memory runs short.

use std::env;
use std::error::Error;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// How long a client's thread waits in `read` before it looks at its
/// channel, so about how long a line for that client can wait (COST 1).
const READ_TIMEOUT: Duration = Duration::from_millis(10);
/// A send that moves nothing for this long cuts its client (COST 3).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines waiting for one client; when full, the hub waits (COST 3).
const OUTBOX_LINES: usize = 1024;
/// Events waiting for the hub; when full, the clients' threads wait.
const HUB_INBOX: usize = 1024;
/// A client that sends a longer line is cut.
const MAX_LINE: usize = 4096;
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client's connection: rustls' state and the socket, one value.
type Tls = StreamOwned<ServerConnection, TcpStream>;

/// What a client's thread tells the hub.
enum Event {
    /// A client is in: lines for it go to `outbox`.
    Joined { id: u64, outbox: Sender<Arc<str>> },
    /// A client said `text`.
    Said { id: u64, text: String },
    /// A client has gone.
    Left { id: u64 },
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("card-chat: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let addr = env::args().nth(1).unwrap_or("127.0.0.1:8080".into());
    let config =
        make_config().map_err(|err| format!("{err} (does certs/ exist? run make certs)"))?;
    let config = Arc::new(config);
    let listener =
        TcpListener::bind(&addr).map_err(|err| format!("cannot listen on {addr}: {err}"))?;
    println!("listening on {}", listener.local_addr()?);
    let (hub, inbox) = crossbeam_channel::bounded(HUB_INBOX);
    thread::spawn(move || run_hub(inbox));
    for (id, socket) in (1..).zip(listener.incoming()) {
        let Ok(socket) = socket else { continue };
        let (config, hub) = (Arc::clone(&config), hub.clone());
        thread::spawn(move || {
            if let Err(err) = serve(config, socket, id, &hub) {
                println!("guest{id}: {err}");
            }
            // The hub runs as long as the process: this cannot fail.
            let _ = hub.send(Event::Left { id });
        });
    }
    Ok(())
}

/// The hub: who is here, and every line to everyone, in one order.
fn run_hub(inbox: Receiver<Event>) {
    let mut outboxes: Vec<(u64, Sender<Arc<str>>)> = Vec::new();
    for event in inbox {
        match event {
            Event::Joined { id, outbox } => {
                // Sent from here, so a client that has its greeting is
                // sure to get every line said after it.
                let greeting = format!(
                    "notice Welcome to the secure chat server!\nnotice you are guest{id}\n\
                     notice you are in #lobby ({} here)\n",
                    outboxes.len() + 1
                );
                if outbox.send(greeting.into()).is_ok() {
                    outboxes.push((id, outbox));
                }
            }
            Event::Said { id, text } => {
                let line: Arc<str> = format!("chat guest{id} {text}\n").into();
                // Blocks while a client's channel is full (COST 3); a
                // client whose thread has ended is dropped.
                outboxes.retain(|(_, outbox)| outbox.send(Arc::clone(&line)).is_ok());
            }
            Event::Left { id } => outboxes.retain(|(other, _)| *other != id),
        }
    }
}

/// One client, from its handshake to its end.
fn serve(
    config: Arc<ServerConfig>,
    socket: TcpStream,
    id: u64,
    hub: &Sender<Event>,
) -> io::Result<()> {
    let mut tls = StreamOwned::new(
        ServerConnection::new(config).map_err(io::Error::other)?,
        socket,
    );
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    while tls.conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(ErrorKind::TimedOut, "handshake too slow"));
        }
        tls.sock.set_read_timeout(Some(left))?;
        if let Err(err) = tls.conn.complete_io(&mut tls.sock) {
            // A read timeout is "no data yet": the deadline above decides.
            if !matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                return Err(err);
            }
        }
    }
    tls.sock.set_read_timeout(Some(READ_TIMEOUT))?;
    tls.sock.set_write_timeout(Some(WRITE_TIMEOUT))?;
    // A batch (at most OUTBOX_LINES lines) is encrypted whole before it is
    // sent; rustls would otherwise refuse more than 64 KiB at once.
    tls.conn.set_buffer_limit(None);
    let (outbox, mine) = crossbeam_channel::bounded(OUTBOX_LINES);
    tell_hub(&mut tls, hub, &mine, Event::Joined { id, outbox })?;

    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break, // close_notify
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            // No data within READ_TIMEOUT: time to look at the channel.
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // Gone without close_notify: an ordinary end.
            Err(err) if err.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(err) => return Err(err),
        }
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            if !text.is_empty() {
                tell_hub(&mut tls, hub, &mine, Event::Said { id, text })?;
            }
        }
        if pending.len() > MAX_LINE {
            return Err(io::Error::new(ErrorKind::InvalidData, "line too long"));
        }
        let lines: Vec<Arc<str>> = mine.try_iter().take(OUTBOX_LINES).collect();
        write_lines(&mut tls, &lines)?;
    }
    tls.conn.send_close_notify();
    send_pending(&mut tls)
}

/// Sends `event` to the hub. While the hub's inbox is full, the hub may be
/// waiting for room in this client's own channel: empty it meanwhile, or
/// the two would wait for each other for ever.
fn tell_hub(
    tls: &mut Tls,
    hub: &Sender<Event>,
    mine: &Receiver<Arc<str>>,
    event: Event,
) -> io::Result<()> {
    loop {
        select! {
            send(hub, event) -> sent => return sent.map_err(|_| hub_stopped()),
            recv(mine) -> line => write_lines(tls, &[line.map_err(|_| hub_stopped())?])?,
        }
    }
}

/// Writes `lines` in one go: a few TLS records rather than one a line.
fn write_lines(tls: &mut Tls, lines: &[Arc<str>]) -> io::Result<()> {
    tls.conn.writer().write_all(lines.concat().as_bytes())?;
    send_pending(tls)
}

/// Hands everything rustls has encrypted to the socket. Each `write_tls`
/// is one blocking send: it returns when all is sent, or after
/// WRITE_TIMEOUT with what it had sent by then, or with `WouldBlock` if it
/// sent nothing; so a client whose socket is full is cut one to two
/// WRITE_TIMEOUTs later. (`Stream::write` would retry on its own.)
fn send_pending(tls: &mut Tls) -> io::Result<()> {
    while tls.conn.wants_write() {
        tls.conn.write_tls(&mut tls.sock)?;
    }
    Ok(())
}

fn hub_stopped() -> io::Error {
    io::Error::other("the hub has stopped")
}

fn make_config() -> Result<ServerConfig, Box<dyn Error>> {
    let certs = load_certs("certs/server.crt")?;
    let key = load_private_key("certs/server.key")?;
    Ok(ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?)
}

fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|err| format!("{path}: {err}"))?
        .collect();
    certs.map_err(|err| format!("{path}: {err}"))
}

fn load_private_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|err| format!("{path}: {err}"))
}

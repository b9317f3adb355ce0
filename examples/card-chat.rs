//! The chat in the shape first asked for: a thread per client owning its
//! rustls `StreamOwned`, and a crossbeam hub thread that fans every line out
//! to every client's channel. Run: `cargo run --example card-chat [ADDR]`.
//! Next: src/lib.rs, the tour of the real server, which answers each COST below.
//!
//! It speaks the part of PROTOCOL.md that chat-bench needs: a greeting
//! (`notice you are guestN`), then every line anyone sends comes back to
//! everyone, the sender too, as `chat guestN TEXT`. No nicks, rooms or
//! commands: for those, read the real server.
//!
//! What this shape costs, measured with chat-bench beside chat-server on a
//! 2-core machine (BENCHMARKS.md, "The card's chat"; figures are medians):
//!
//! COST 1, a line waits for its reader's timeout. rustls has no separate
//! read and write halves, so the thread that owns the stream both reads and
//! writes it, one at a time. While it waits in `read`, a line for its client
//! sits in its channel: each thread reads with READ_TIMEOUT and looks at its
//! channel in between, so a line waits up to READ_TIMEOUT (latency p50 @P50@
//! ms, p99 @P99@ ms, against chat-server's @SP50@ and @SP99@ ms). A shorter timeout
//! costs wake-ups: 1000 idle clients wake 100,000 times a second. The real
//! server shares one connection between a reading thread and a writer with a
//! lock never held across a wait (src/duplex.rs), and its writers wait on
//! epoll, not on a clock (src/shard.rs).
//!
//! COST 2, a reader blocked in `read` holds the stream: nothing can be
//! written to that client by anyone else meanwhile, and every line is written
//! by its recipient's thread, one TLS record and one system call per batch
//! per client: @CPU@ µs of server CPU per delivery against chat-server's @SCPU@
//! µs (fan-out, 100 clients, 10 senders). The real server hands each line to
//! a writer shard once, which sends to many sockets from one thread
//! (src/hub.rs, src/shard.rs).
//!
//! COST 3, one slow reader holds up the hub. Each client's channel is
//! bounded (OUTBOX_LINES): unbounded, a client that never reads would grow
//! the server's memory without end. Full, the hub waits, so the whole room
//! moves at the pace of its slowest reader; a reader that stops altogether
//! stops everyone until its write has made no progress for WRITE_TIMEOUT and
//! it is cut (with one stalled reader, the others took @SLOW@ times as long).
//! Cutting a client as soon as its channel is full would spare the hub, but
//! in a burst every reader is behind: healthy ones would be cut. The real
//! server keeps a healthy reader however far behind, cuts one whose socket
//! takes nothing, and slows the senders when memory runs short, without ever
//! waiting on one socket (src/shard.rs, src/budget.rs; DESIGN.md's policy).

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
/// channel: the longest a line for that client waits (COST 1).
const READ_TIMEOUT: Duration = Duration::from_millis(10);
/// A client whose socket takes nothing for this long is cut (COST 3).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines waiting for one client; when full, the hub waits (COST 3).
const OUTBOX_LINES: usize = 1024;
/// Events waiting for the hub; when full, the clients' threads wait.
const HUB_INBOX: usize = 1024;
/// A client that sends a longer line is cut.
const MAX_LINE: usize = 4096;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
        tls.conn.complete_io(&mut tls.sock)?;
    }
    tls.sock.set_read_timeout(Some(READ_TIMEOUT))?;
    tls.sock.set_write_timeout(Some(WRITE_TIMEOUT))?;
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
    tls.flush()
}

/// Sends `event` to the hub. While the hub's inbox is full, the hub may be
/// waiting for room in this client's own channel: empty it meanwhile, or
/// the two would wait for each other for ever.
fn tell_hub(
    tls: &mut StreamOwned<ServerConnection, TcpStream>,
    hub: &Sender<Event>,
    mine: &Receiver<Arc<str>>,
    event: Event,
) -> io::Result<()> {
    loop {
        select! {
            send(hub, event) -> sent => return sent.map_err(|_| io::Error::other("the hub has stopped")),
            recv(mine) -> line => write_lines(tls, &line.into_iter().collect::<Vec<_>>())?,
        }
    }
}

/// Writes `lines` in one go: one TLS record (or a few) rather than one each.
fn write_lines(
    tls: &mut StreamOwned<ServerConnection, TcpStream>,
    lines: &[Arc<str>],
) -> io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let batch: String = lines.iter().map(|line| &**line).collect();
    tls.write_all(batch.as_bytes())?;
    tls.flush()
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

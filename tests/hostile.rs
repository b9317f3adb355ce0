//! Hostile and broken clients: each defence of the server, one test each.
//!
//! Descriptor and thread accounting lives in `tests/cleanup.rs`, which
//! needs a process of its own.

use secure_chat_test_support as support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use secure_chat::duplex::{self, ReadHalf, Received, WriteHalf};
use secure_chat::protocol::{BYE_REPLY, WELCOME};
use secure_chat::server::Limits;
use secure_chat::throttle::RateLimit;
use support::{
    chat_with, half_client_hello, rss_kib, test_limits, wait_until, Incoming, Pki, ServerProcess,
    SilentClient, TestClient, TestServer, SERVER, TIMEOUT,
};

/// The tests of this file run in parallel threads of one process. Those
/// that measure the whole process (its memory, how soon a connection is
/// served) hold this lock alone; the others share it.
static PROCESS: RwLock<()> = RwLock::new(());

fn alone() -> RwLockWriteGuard<'static, ()> {
    PROCESS.write().unwrap_or_else(PoisonError::into_inner)
}

fn shared() -> RwLockReadGuard<'static, ()> {
    PROCESS.read().unwrap_or_else(PoisonError::into_inner)
}

/// Client `from` sends a marker that every client in `to` must see as its
/// very next line: the hub handles lines in order, so nothing sent before
/// the marker is still on its way to them.
fn assert_marker_is_next(clients: &mut [TestClient], from: usize, to: &[usize]) {
    clients[from].send("marker");
    let expected = format!("chat {} marker", clients[from].nick);
    for &i in to {
        assert_eq!(
            clients[i].recv(),
            expected,
            "as seen by {}",
            clients[i].nick
        );
    }
}

/// Reads `socket` until the peer closes it. Returns false if it was still
/// open after [`TIMEOUT`] of silence.
fn closed_by_peer(socket: &mut TcpStream) -> bool {
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 4096];
    // A TLS alert is a few bytes; anything near this much is not a close.
    for _ in 0..16 {
        match socket.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn silent_and_half_handshakes_do_not_delay_a_good_client_and_are_dropped() {
    const SILENT: usize = 300;
    const HALF: usize = 100;
    /// Well under the listen backlog (128).
    const BATCH: usize = 64;
    let _alone = alone();
    let handshake_timeout = Duration::from_secs(2);
    let pki = Pki::new();
    let limits = Limits {
        handshake_timeout,
        max_clients: 1000,
        ..test_limits()
    };
    let server = TestServer::start_with(&pki, limits);
    let hello = half_client_hello(&pki.ca);

    // Opened in batches the listen backlog can hold, each accepted before
    // the next, so that no connection waits out a dropped SYN.
    let mut idle: Vec<(TcpStream, Instant)> = Vec::new();
    while idle.len() < SILENT + HALF {
        for _ in 0..BATCH.min(SILENT + HALF - idle.len()) {
            let mut socket = TcpStream::connect_timeout(&server.addr, TIMEOUT).unwrap();
            let connected = Instant::now();
            if idle.len() >= SILENT {
                socket.write_all(&hello).unwrap();
            }
            idle.push((socket, connected));
        }
        let opened = idle.len();
        assert!(
            wait_until(|| server.open_connections() >= opened),
            "the server holds {} connections, not {opened}",
            server.open_connections()
        );
    }
    let opening = idle[0].1.elapsed();
    assert!(
        opening < handshake_timeout,
        "opening {} connections took {opening:?}: the first ones may be gone",
        SILENT + HALF
    );

    let start = Instant::now();
    let mut good = TestClient::connect(server.addr, &pki.ca);
    good.send("through the crowd");
    assert_eq!(good.recv(), format!("chat {} through the crowd", good.nick));
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "a good client took {took:?} to connect and chat past {} idle sockets",
        SILENT + HALF
    );

    for (n, (socket, connected)) in idle.iter_mut().enumerate() {
        assert!(closed_by_peer(socket), "idle socket {n} is still open");
        // The deadline, not anything else, closed it.
        let lived = connected.elapsed();
        assert!(
            lived >= handshake_timeout,
            "idle socket {n} was closed after {lived:?}"
        );
    }
    assert!(
        wait_until(|| server.open_connections() == 1),
        "{} connections still open; only the good client should be",
        server.open_connections()
    );
    good.send("still here");
    assert_eq!(good.recv(), format!("chat {} still here", good.nick));
    server.stop();
}

#[test]
fn eight_mib_without_a_newline_is_refused_as_it_arrives() {
    const CHUNK: usize = 64 * 1024;
    const TOTAL: usize = 8 * 1024 * 1024;
    let _alone = alone();
    let limits = test_limits();
    let (_pki, server, mut c) = chat_with(2, limits);
    let nick = c[0].nick.clone();
    let rss_before = rss_kib();

    let chunk = vec![b'x'; CHUNK];
    for _ in 0..TOTAL / CHUNK {
        c[0].send_raw(&chunk);
    }
    c[0].send_raw(b"\nafter\n");
    assert_eq!(
        c[0].recv(),
        format!(
            "error line too long: the limit is {} bytes; it was not sent",
            limits.max_line
        )
    );
    assert_eq!(c[0].recv(), format!("chat {nick} after"));
    assert_eq!(c[1].recv(), format!("chat {nick} after"));
    let growth_kib = rss_kib().saturating_sub(rss_before);

    // A server that buffered the line would have grown by its 8 MiB.
    assert!(
        growth_kib < 4 * 1024,
        "the process grew by {growth_kib} KiB"
    );
    assert_marker_is_next(&mut c, 0, &[0, 1]);
    server.stop();
}

#[test]
fn invalid_utf8_is_refused_to_its_sender_and_reaches_nobody() {
    let _shared = shared();
    let (_pki, server, mut c) = chat_with(2, test_limits());
    // A stray byte, a truncated sequence, an overlong `/`, a surrogate.
    c[0].send_raw(b"bad \xff byte\ncaf\xc3\noverlong \xc0\xaf\nsurrogate \xed\xa0\x80\n");
    for _ in 0..4 {
        assert_eq!(
            c[0].recv(),
            "error line is not valid UTF-8; it was not sent"
        );
    }
    assert_marker_is_next(&mut c, 0, &[0, 1]);
    server.stop();
}

#[test]
fn escape_sequences_arrive_without_esc_or_csi() {
    let _shared = shared();
    let (_pki, server, mut c) = chat_with(2, test_limits());
    let nick = c[0].nick.clone();
    let sent = [
        // ESC first, in the middle, last; C1 CSI (U+009B) likewise.
        (
            "\x1b[2J\x1b[Hcleared \x1b[31mred\x1b[0m end\x1b",
            "[2J[Hcleared [31mred[0m end",
        ),
        (
            "\u{9b}6n asks \u{9b}31mthe\u{9b} terminal\u{9b}",
            "6n asks 31mthe terminal",
        ),
        (
            "title \x1b]0;pwned\x07 then \u{9b}\x1b\u{9b}mixed\ttab",
            "title ]0;pwned then mixed\ttab",
        ),
    ];
    for (line, _) in &sent {
        c[0].send(line);
    }
    for (_, expected) in &sent {
        let expected = format!("chat {nick} {expected}");
        assert_eq!(c[1].recv(), expected);
        assert_eq!(c[0].recv(), expected);
    }
    // Nothing but control characters: nothing is left to say.
    c[0].send("\x1b\u{9b}\x1b\u{9b}");
    assert_marker_is_next(&mut c, 0, &[1, 0]);
    server.stop();
}

#[test]
fn past_max_clients_a_newcomer_is_told_the_server_is_full() {
    let _shared = shared();
    let limits = Limits {
        max_clients: 3,
        ..test_limits()
    };
    let (pki, server, mut c) = chat_with(3, limits);
    let fourth = TestClient::connect_quietly(server.addr, &pki.ca);
    assert_eq!(
        fourth.next(),
        Incoming::Line("error server full (3 clients); try again later".into())
    );
    assert_eq!(fourth.next(), Incoming::Closed);

    // The server stays up, and a place that frees up can be taken.
    c[0].send("/quit");
    assert_eq!(c[0].recv(), format!("notice {BYE_REPLY}"));
    assert_eq!(c[0].next(), Incoming::Closed);
    assert_eq!(c[1].recv(), format!("notice {} quit", c[0].nick));
    let mut newcomer = TestClient::connect(server.addr, &pki.ca);
    assert_eq!(
        c[1].recv(),
        format!("notice {} joined #lobby", newcomer.nick)
    );
    newcomer.send("made it");
    assert_eq!(c[1].recv(), format!("chat {} made it", newcomer.nick));
    server.stop();
}

#[test]
fn past_max_per_ip_a_newcomer_from_that_address_is_refused() {
    let _shared = shared();
    let limits = Limits {
        max_per_ip: Some(2),
        ..test_limits()
    };
    let (pki, server, mut c) = chat_with(2, limits);
    let third = TestClient::connect_quietly(server.addr, &pki.ca);
    assert_eq!(
        third.next(),
        Incoming::Line(
            "error too many connections from 127.0.0.1 (2); close one and try again".into()
        )
    );
    assert_eq!(third.next(), Incoming::Closed);

    c[0].send("/quit");
    assert_eq!(c[0].recv(), format!("notice {BYE_REPLY}"));
    assert_eq!(c[1].recv(), format!("notice {} quit", c[0].nick));
    let newcomer = TestClient::connect(server.addr, &pki.ca);
    assert_eq!(
        c[1].recv(),
        format!("notice {} joined #lobby", newcomer.nick)
    );
    server.stop();
}

#[test]
fn one_address_cannot_take_every_handshake_slot() {
    let _shared = shared();
    // A handshake timeout far beyond TIMEOUT: a socket the server closes
    // within TIMEOUT was closed by the per-address limit, not by it.
    let limits = Limits {
        max_per_ip: Some(2),
        handshake_timeout: Duration::from_secs(120),
        ..test_limits()
    };
    let pki = Pki::new();
    let server = TestServer::start_with(&pki, limits);
    // Twice the limit may be connecting at once; each is counted as the
    // accept loop takes it, in the order they connected.
    let mut silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    let mut extra = TcpStream::connect(server.addr).unwrap();
    assert!(closed_by_peer(&mut extra), "a fifth connection was kept");
    // The four are still waiting for their handshake.
    assert!(wait_until(|| server.open_connections() == 4));
    for socket in &mut silent {
        socket
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let mut byte = [0u8; 1];
        let err = socket.read(&mut byte).unwrap_err();
        assert!(matches!(
            err.kind(),
            ErrorKind::WouldBlock | ErrorKind::TimedOut
        ));
    }
    // Once they go, the address may connect again.
    drop(silent);
    assert!(wait_until(|| server.open_connections() == 0));
    let mut client = TestClient::connect(server.addr, &pki.ca);
    client.send("back");
    assert_eq!(client.recv(), format!("chat {} back", client.nick));
    server.stop();
}

#[test]
fn a_flooding_client_is_slowed_down_not_dropped_and_told_once() {
    const LINES: u32 = 45;
    const RATE: RateLimit = RateLimit {
        per_second: 20,
        burst: 5,
    };
    const THROTTLED: &str =
        "error you are sending too fast: your lines are being delayed (none are lost)";
    let _shared = shared();
    let limits = Limits {
        rate: Some(RATE),
        ..test_limits()
    };
    let (_pki, server, mut c) = chat_with(2, limits);
    let nick = c[0].nick.clone();

    let flood: String = (0..LINES).map(|n| format!("flood {n}\n")).collect();
    let start = Instant::now();
    c[0].send_raw(flood.as_bytes());
    for n in 0..LINES {
        assert_eq!(c[1].recv(), format!("chat {nick} flood {n}"));
    }
    let took = start.elapsed();

    let mut acknowledged = 0;
    let mut notices = 0;
    while acknowledged < LINES {
        let line = c[0].recv();
        if line == THROTTLED {
            notices += 1;
        } else {
            assert_eq!(line, format!("chat {nick} flood {acknowledged}"));
            acknowledged += 1;
        }
    }
    assert_eq!(notices, 1, "the flooder should be told exactly once");
    assert_marker_is_next(&mut c, 0, &[0, 1]);

    // The burst passes at once; each line after it waits its turn.
    let least = Duration::from_secs_f64(f64::from(LINES - RATE.burst) / f64::from(RATE.per_second));
    assert!(
        took + Duration::from_millis(20) >= least,
        "{LINES} lines went through in {took:?}; the limit allows no less than {least:?}"
    );
    // Slowed, not stalled: generous, as a loaded machine adds to it.
    assert!(
        took < least + Duration::from_secs(8),
        "{LINES} lines took {took:?}"
    );
    server.stop();
}

#[test]
fn a_never_reading_client_is_cut_off_while_ten_others_exchange_20000_lines() {
    const SENDERS: usize = 10;
    const LINES_EACH: usize = 2_000;
    /// Each sender keeps at most this many of its lines unacknowledged.
    const WINDOW: usize = 64;
    let _shared = shared();
    // The server's own limits: the silent client is cut once its socket
    // has taken nothing for the stall timeout.
    let limits = test_limits();
    let pki = Pki::new();
    let server = TestServer::start_with(&pki, limits);
    let mut clients: Vec<BulkClient> = (0..SENDERS)
        .map(|_| BulkClient::connect(server.addr, &pki.ca))
        .collect();
    let mut silent = SilentClient::connect(server.addr, &pki.ca);
    // Each hears of everyone after it joining, the silent client last.
    for (i, client) in clients.iter_mut().enumerate() {
        for _ in i..SENDERS {
            let joined = client.next_line();
            assert!(joined.ends_with(" joined #lobby"), "{joined}");
        }
    }
    let nicks: Vec<String> = clients.iter().map(|c| c.nick.clone()).collect();

    // Lines of 1 KiB: 20 MiB in all, far more than the silent client's
    // socket buffers and queue can hold.
    let padding = "x".repeat(1000);
    let notices: Vec<Vec<String>> = thread::scope(|scope| {
        let exchanges: Vec<_> = clients
            .iter_mut()
            .map(|client| {
                let (nicks, padding) = (&nicks, padding.as_bytes());
                scope.spawn(move || client.exchange(nicks, LINES_EACH, WINDOW, padding))
            })
            .collect();
        exchanges.into_iter().map(|e| e.join().unwrap()).collect()
    });
    // The silent client is cut during the exchange or after it, once its
    // socket has taken nothing for the stall timeout: the room is told.
    if notices[0].is_empty() {
        let notice = clients[0].next_line();
        assert!(notice.ends_with(" quit: too slow"), "{notice}");
    }
    assert!(
        silent.was_disconnected(),
        "the silent client is still connected"
    );
    server.stop();
}

/// A chat client for bulk traffic that checks every byte it receives.
///
/// [`TestClient`] frames lines byte by byte with the library's framer,
/// which, unoptimised in a debug build, would spend longer on the 200 MiB
/// the ten clients receive than the server spends on everything; this one
/// reads the head of each chat line and compares the rest with the padding
/// it expects in one `memcmp`.
struct BulkClient {
    reader: ReadHalf,
    writer: WriteHalf,
    /// Received bytes; those before `start` have been read.
    received: Vec<u8>,
    start: usize,
    nick: String,
}

/// One line a [`BulkClient`] received.
enum Bulk {
    /// `chat FROM N PADDING`, the padding checked.
    Chat { from: String, n: usize },
    /// Anything else, as text.
    Other(String),
}

impl BulkClient {
    /// Connects and reads the greeting.
    fn connect(addr: SocketAddr, ca: &Path) -> BulkClient {
        let (conn, socket) = support::tls_connect(addr, ca);
        // Every wait for the server has a deadline.
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        let (reader, writer) = duplex::split(conn, Arc::new(socket));
        let mut client = BulkClient {
            reader,
            writer,
            received: Vec::new(),
            start: 0,
            nick: String::new(),
        };
        assert_eq!(client.next_line(), format!("notice {WELCOME}"));
        let you_are = client.next_line();
        client.nick = you_are.strip_prefix("notice you are ").unwrap().to_string();
        assert!(client.next_line().starts_with("notice you are in #lobby ("));
        client
    }

    /// The next line that is not a bulk chat line.
    fn next_line(&mut self) -> String {
        match self.next(b"") {
            Bulk::Other(line) => line,
            Bulk::Chat { from, n } => panic!("{}: unexpected chat {from} {n}", self.nick),
        }
    }

    /// The next line, chat lines checked to end in `padding`.
    fn next(&mut self, padding: &[u8]) -> Bulk {
        loop {
            if let Some((line, len)) = parse_bulk(&self.received[self.start..], padding) {
                self.start += len;
                return line;
            }
            self.received.drain(..self.start);
            self.start = 0;
            let received = &mut self.received;
            match self
                .reader
                .receive(&mut |bytes| received.extend_from_slice(bytes))
            {
                Ok(Received::Data { .. }) => {}
                other => panic!("{}: connection ended: {other:?}", self.nick),
            }
        }
    }

    /// Sends `lines` numbered lines with at most `window` unacknowledged,
    /// while checking that every line of every sender arrives exactly once,
    /// in its sender's order.
    /// Returns the notices that came meanwhile.
    fn exchange(
        &mut self,
        nicks: &[String],
        lines: usize,
        window: usize,
        padding: &[u8],
    ) -> Vec<String> {
        let me = nicks.iter().position(|n| *n == self.nick).unwrap();
        let mut notices = Vec::new();
        let mut next = vec![0; nicks.len()];
        let (mut sent, mut received) = (0, 0);
        while received < nicks.len() * lines {
            if sent < lines && sent - next[me] < window {
                let mut line = format!("{sent} ").into_bytes();
                line.extend_from_slice(padding);
                line.push(b'\n');
                self.writer.send(&line).unwrap();
                sent += 1;
                continue;
            }
            let (from, n) = match self.next(padding) {
                Bulk::Chat { from, n } => (from, n),
                // The silent client's departure, and nothing else, is allowed.
                Bulk::Other(line) => {
                    assert!(line.ends_with(" quit: too slow"), "{}: {line}", self.nick);
                    notices.push(line);
                    continue;
                }
            };
            let sender = nicks
                .iter()
                .position(|n| *n == from)
                .expect("a known sender");
            assert_eq!(
                n, next[sender],
                "{} got {from}'s lines out of order",
                self.nick
            );
            next[sender] += 1;
            received += 1;
        }
        assert!(next.iter().all(|&count| count == lines));
        notices
    }
}

impl Drop for BulkClient {
    fn drop(&mut self) {
        self.writer.disconnect();
    }
}

/// The first line in `bytes` and its length with the `\n`, if it is all
/// there. A chat line `chat FROM N PADDING` must end in exactly `padding`;
/// with an empty `padding`, every line is `Other`.
fn parse_bulk(bytes: &[u8], padding: &[u8]) -> Option<(Bulk, usize)> {
    let word = |bytes: &[u8]| bytes.iter().position(|&b| b == b' ');
    if let Some(rest) = bytes.strip_prefix(b"chat ").filter(|_| !padding.is_empty()) {
        let from_len = word(rest)?;
        let after_from = &rest[from_len + 1..];
        let n_len = word(after_from)?;
        let text = &after_from[n_len + 1..];
        if text.len() <= padding.len() {
            return None;
        }
        assert!(
            text[..padding.len()] == *padding && text[padding.len()] == b'\n',
            "a chat line with other text than was sent"
        );
        let line = Bulk::Chat {
            from: String::from_utf8(rest[..from_len].to_vec()).unwrap(),
            n: std::str::from_utf8(&after_from[..n_len])
                .unwrap()
                .parse()
                .unwrap(),
        };
        return Some((line, 5 + from_len + 1 + n_len + 1 + padding.len() + 1));
    }
    let end = bytes.iter().position(|&b| b == b'\n')?;
    let line = String::from_utf8(bytes[..end].to_vec()).unwrap();
    Some((Bulk::Other(line), end + 1))
}

/// CPU time process `pid` has used so far, in clock ticks (user and system).
fn cpu_ticks_of(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_descriptors_the_server_pauses_logs_once_and_recovers() {
    /// The server's open-files limit at start: its capacity is computed
    /// from this, and never uses up the descriptors by itself.
    const FILES_AT_START: usize = 200;
    /// The limit once running, as if an operator lowered it: a few for
    /// itself, then sockets.
    const FILES: usize = 40;
    /// Connections the test holds: enough to use up every descriptor.
    const HOLD: usize = 60;
    /// How long the test holds them: several of the server's pauses.
    const HOLD_FOR: Duration = Duration::from_millis(600);
    let _shared = shared();
    let pki = Pki::new();
    let mut server = ServerProcess::spawn_command(
        Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {FILES_AT_START} && exec \"$0\" \"$@\""))
            .arg(&SERVER)
            .args(["--addr", "127.0.0.1:0", "--rate", "0"])
            // Only our own connections may close; none may time out.
            .args(["--handshake-timeout", "60"])
            .arg("--cert")
            .arg(&pki.cert)
            .arg("--key")
            .arg(&pki.key),
    );
    server.wait_until_listening();
    let addr = server.addr;
    let lowered = Command::new("prlimit")
        .arg(format!("--pid={}", server.pid))
        .arg(format!("--nofile={FILES}:{FILES}"))
        .status()
        .expect("prlimit (util-linux) is installed");
    assert!(lowered.success(), "prlimit failed: {lowered}");

    let held: Vec<TcpStream> = (0..HOLD)
        .map(|_| TcpStream::connect_timeout(&addr, TIMEOUT).unwrap())
        .collect();
    let first = server.wait_for_log(|line| line.contains("accept failed"));
    assert!(first.contains("pausing new connections"), "{first:?}");
    // The passage of time is what is tested: while nothing is freed, the
    // accept loop fails again and again, and must neither log each failure
    // nor burn the CPU.
    let cpu_before = cpu_ticks_of(server.pid);
    thread::sleep(HOLD_FOR);
    let cpu_ticks = cpu_ticks_of(server.pid) - cpu_before;
    drop(held);
    // The log of the episode: every line from here to the recovery.
    let episode_start = server.seen.len();
    server.wait_for_log(|line| line.contains("accepting connections again"));
    let failures: Vec<&String> = server.seen[episode_start..]
        .iter()
        .filter(|line| line.contains("accept failed"))
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    // Clock ticks are hundredths of a second; a loop that spun would use
    // about all of the time held.
    assert!(
        cpu_ticks * 10 < HOLD_FOR.as_millis() as u64 / 2,
        "the server used {cpu_ticks} ticks of CPU in {HOLD_FOR:?} while out of descriptors"
    );

    let start = Instant::now();
    let mut client = TestClient::connect(addr, &pki.ca);
    client.send("back again");
    assert_eq!(client.recv(), format!("chat {} back again", client.nick));
    assert!(start.elapsed() < TIMEOUT);

    server.signal("-TERM");
    assert_eq!(client.recv(), "notice server shutting down, goodbye");
    assert_eq!(client.next(), Incoming::Closed);
    let (status, _) = server.wait_for_exit();
    assert_eq!(status.code(), Some(0));
}

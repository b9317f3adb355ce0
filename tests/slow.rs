//! The slow-consumer policy: a healthy reader is never cut and never loses
//! a line, however fast others send; a stalled or hopelessly slow one is
//! cut, with its reason in the log; and when too much waits in the whole
//! server, the senders are slowed down instead of anyone being dropped.
//!
//! The clients here split into a reading thread and a sending thread, as a
//! real client does, and check every line they receive: each sender's
//! lines arrive exactly once and in order. The last test drives one writer
//! shard directly, with no hub, to check its budget accounting over real
//! sockets (the pure parts are unit-tested in `src/shard/backlog.rs` and
//! `src/slow_readers.rs`).

use secure_chat_test_support as support;

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rustls::{Connection, ServerConnection};
use secure_chat::budget::{Budget, Outgoing};
use secure_chat::chat::{ClientId, CloseReason, RoomId};
use secure_chat::client;
use secure_chat::duplex::{self, ReadHalf, Received, WriteHalf};
use secure_chat::protocol::WELCOME;
use secure_chat::shard::{self, Fate, Registration, ShardSettings, To, Work};
use secure_chat::slow_readers::{Policy, UNSENT_LIMIT};
use secure_chat::tls::{self, Trust};
use support::{
    cert_args, client_options, test_limits, wait_until, Pki, ServerProcess, TestServer, TIMEOUT,
};

/// These tests move tens of megabytes each; on two cores, one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Text after each line's number: with `chat NICK N `, about 1 KiB a line.
fn padding() -> Vec<u8> {
    vec![b'x'; 1000]
}

/// A chat client whose halves can go to two threads.
struct Peer {
    read: ReadHalf,
    write: WriteHalf,
    socket: Arc<TcpStream>,
    nick: String,
    /// Received bytes not yet taken as lines.
    buffer: Vec<u8>,
}

impl Peer {
    /// Connects, with the socket's receive buffer pinned to `receive_buffer`
    /// bytes if given (the kernel doubles it), and reads the greeting.
    fn connect(addr: SocketAddr, ca: &Path, receive_buffer: Option<usize>) -> Peer {
        let socket = tcp_connect(addr, receive_buffer);
        let (conn, socket) = tls_client(socket, addr, ca);
        let (read, write) = duplex::split(conn, Arc::clone(&socket));
        let mut peer = Peer {
            read,
            write,
            socket,
            nick: String::new(),
            buffer: Vec::new(),
        };
        assert_eq!(peer.next_line(), format!("notice {WELCOME}"));
        let you_are = peer.next_line();
        peer.nick = you_are.strip_prefix("notice you are ").unwrap().to_string();
        assert!(peer.next_line().starts_with("notice you are in #lobby ("));
        peer
    }

    /// The next whole line, without its `\n`, as text.
    fn next_line(&mut self) -> String {
        let mut line = None;
        let end = read_lines(&mut self.read, &mut self.buffer, |bytes| {
            line = Some(String::from_utf8_lossy(bytes).into_owned());
            false
        });
        line.unwrap_or_else(|| panic!("{}: connection ended: {end:?}", self.nick))
    }
}

/// A TCP connection to `addr`, with its receive buffer pinned to
/// `receive_buffer` bytes if given (the kernel doubles it).
fn tcp_connect(addr: SocketAddr, receive_buffer: Option<usize>) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    if let Some(bytes) = receive_buffer {
        // Before connecting, so that the window offered is small too.
        socket.set_recv_buffer_size(bytes).unwrap();
    }
    socket.connect_timeout(&addr.into(), TIMEOUT).unwrap();
    socket.into()
}

/// The library's client handshake on our own socket, taken apart again, as
/// the reading here is the test's own; every later read has a deadline.
fn tls_client(socket: TcpStream, addr: SocketAddr, ca: &Path) -> (Connection, Arc<TcpStream>) {
    let config = tls::client_config(&Trust::CaFile(ca.to_owned()), None).unwrap();
    let options = client_options(addr, ca);
    let (conn, socket) = client::handshake(socket, config, &options)
        .unwrap()
        .into_parts();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    (conn, Arc::new(socket))
}

/// Hands each line received to `each`, without its `\n`, until `each`
/// returns false (then `None`) or the connection ends (then how it ended).
/// `buffer` keeps what arrived after the last line taken.
fn read_lines(
    read: &mut ReadHalf,
    buffer: &mut Vec<u8>,
    mut each: impl FnMut(&[u8]) -> bool,
) -> Option<Ended> {
    let mut start = 0;
    loop {
        while let Some(len) = buffer[start..].iter().position(|&b| b == b'\n') {
            let go_on = each(&buffer[start..start + len]);
            start += len + 1;
            if !go_on {
                buffer.drain(..start);
                return None;
            }
        }
        buffer.drain(..start);
        start = 0;
        match read.receive(&mut |bytes| buffer.extend_from_slice(bytes)) {
            Ok(Received::Data { .. }) => {}
            Ok(Received::Closed) => return Some(Ended::Closed),
            Ok(Received::Eof) => return Some(Ended::Eof),
            Err(err) => return Some(Ended::Failed(err.to_string())),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.write.disconnect();
    }
}

/// How a connection ended, as a reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    Closed,
    Eof,
    Failed(String),
}

/// What a reading thread made of the chat lines it received.
#[derive(Debug, Default)]
struct Tally {
    /// Per sender (by nick), how many of its lines arrived, in order.
    received: Vec<(String, usize)>,
    /// Anything that was not a numbered chat line.
    other: Vec<String>,
}

impl Tally {
    /// Checks one line: `chat NICK N PADDING`, N the next number from NICK.
    fn take(&mut self, line: &[u8], padding: &[u8]) {
        let text = |line: &[u8]| String::from_utf8_lossy(line).into_owned();
        let Some(rest) = line.strip_prefix(b"chat ") else {
            self.other.push(text(line));
            return;
        };
        let mut words = rest.splitn(3, |&b| b == b' ');
        let (Some(nick), Some(n), Some(pad)) = (words.next(), words.next(), words.next()) else {
            panic!("malformed chat line: {}", text(line));
        };
        assert_eq!(pad, padding, "a line's text was changed");
        let nick = text(nick);
        let n: usize = text(n).parse().expect("a line number");
        let count = match self.received.iter_mut().find(|(who, _)| *who == nick) {
            Some((_, count)) => count,
            None => {
                self.received.push((nick.clone(), 0));
                &mut self.received.last_mut().unwrap().1
            }
        };
        assert_eq!(n, *count, "{nick}'s lines arrived out of order or twice");
        *count += 1;
    }

    fn count_from(&self, nick: &str) -> usize {
        self.received
            .iter()
            .find(|(who, _)| who == nick)
            .map_or(0, |(_, count)| *count)
    }

    fn total(&self) -> usize {
        self.received.iter().map(|(_, count)| count).sum()
    }
}

/// Sends `lines` numbered lines of about 1 KiB, sixteen per write, as fast
/// as the connection takes them.
fn flood(write: &mut WriteHalf, lines: usize, padding: &[u8]) {
    let mut batch = Vec::new();
    for n in 0..lines {
        batch.extend_from_slice(format!("{n} ").as_bytes());
        batch.extend_from_slice(padding);
        batch.push(b'\n');
        if n % 16 == 15 || n + 1 == lines {
            write.send(&batch).expect("the server stopped taking lines");
            batch.clear();
        }
    }
}

/// Reads until `expected` chat lines have arrived; fails if the connection
/// ends first.
fn read_all(peer: &mut Peer, expected: usize, padding: &[u8]) -> Tally {
    read_all_from(
        &mut peer.read,
        &mut peer.buffer,
        &peer.nick,
        expected,
        padding,
    )
}

/// [`read_all`] on the parts of a peer whose write half is busy elsewhere.
fn read_all_from(
    read: &mut ReadHalf,
    buffer: &mut Vec<u8>,
    nick: &str,
    expected: usize,
    padding: &[u8],
) -> Tally {
    let mut tally = Tally::default();
    let end = read_lines(read, buffer, |line| {
        tally.take(line, padding);
        tally.total() < expected
    });
    assert_eq!(
        end,
        None,
        "{nick}: cut after {} of {expected} lines; also got {:?}",
        tally.total(),
        tally.other
    );
    tally
}

/// `peer` floods `lines` lines from one thread while another reads until
/// `expected` chat lines have arrived, as a real client would.
fn flood_and_read(peer: &mut Peer, lines: usize, expected: usize, padding: &[u8]) -> Tally {
    thread::scope(|scope| {
        let Peer {
            write,
            read,
            buffer,
            nick,
            ..
        } = peer;
        scope.spawn(move || flood(write, lines, padding));
        read_all_from(read, buffer, nick, expected, padding)
    })
}

/// chat-server without flood control, with `flags` besides.
fn server_with(pki: &Pki, flags: &[&str]) -> ServerProcess {
    let mut args = cert_args(&pki.cert, &pki.key);
    args.push(OsStr::new("--rate"));
    args.push(OsStr::new("0"));
    args.extend(flags.iter().map(OsStr::new));
    ServerProcess::start(&args)
}

/// A talker, then the client under test (its receive buffer pinned to
/// `receive_buffer` if given); the talker has heard it join.
fn talker_and(addr: SocketAddr, ca: &Path, receive_buffer: Option<usize>) -> (Peer, Peer) {
    let mut talker = Peer::connect(addr, ca, None);
    let other = Peer::connect(addr, ca, receive_buffer);
    assert!(talker.next_line().ends_with(" joined #lobby"));
    (talker, other)
}

/// Sends a numbered line of `padding` every `every` for as long as
/// `go_on` says: a steady room.
fn send_paced(write: &mut WriteHalf, padding: &[u8], every: Duration, go_on: impl Fn() -> bool) {
    let mut n = 0;
    while go_on() {
        let mut line = format!("{n} ").into_bytes();
        line.extend_from_slice(padding);
        line.push(b'\n');
        write.send(&line).unwrap();
        n += 1;
        // The pace is what is tested, not a wait for something.
        thread::sleep(every);
    }
}

/// Reads `size` TLS bytes (without decrypting: only the pace matters)
/// every `every` until `stop` is set. Returns the bytes read, and whether
/// the server cut the connection meanwhile.
fn sip(socket: &TcpStream, size: usize, every: Duration, stop: &AtomicBool) -> (usize, bool) {
    let mut socket = socket;
    let mut raw = vec![0u8; size];
    let mut sipped = 0;
    while !stop.load(Ordering::SeqCst) {
        match std::io::Read::read(&mut socket, &mut raw) {
            Ok(0) | Err(_) => return (sipped, true),
            Ok(n) => sipped += n,
        }
        thread::sleep(every);
    }
    (sipped, false)
}

#[test]
fn a_burst_from_ten_senders_cuts_no_healthy_reader() {
    // Ten clients each send 2,000 lines of 1 KiB at once, with the server's
    // default limits (flood control aside): 20 MiB to each of them.
    const CLIENTS: usize = 10;
    const LINES: usize = 2_000;
    let _heavy = one_at_a_time();
    let pki = Pki::new();
    let server = TestServer::start_with(&pki, test_limits());
    let mut peers: Vec<Peer> = (0..CLIENTS)
        .map(|_| Peer::connect(server.addr, &pki.ca, None))
        .collect();
    for (i, peer) in peers.iter_mut().enumerate() {
        for _ in i + 1..CLIENTS {
            assert!(peer.next_line().ends_with(" joined #lobby"));
        }
    }
    let nicks: Vec<String> = peers.iter().map(|p| p.nick.clone()).collect();
    let padding = padding();
    let tallies: Vec<Tally> = thread::scope(|scope| {
        let clients: Vec<_> = peers
            .iter_mut()
            .map(|peer| scope.spawn(|| flood_and_read(peer, LINES, CLIENTS * LINES, &padding)))
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for (nick, tally) in nicks.iter().zip(&tallies) {
        for sender in &nicks {
            assert_eq!(tally.count_from(sender), LINES, "{nick} from {sender}");
        }
        assert!(tally.other.is_empty(), "{nick} also got {:?}", tally.other);
    }
    server.stop();
}

/// A talker floods `lines` lines while a listener reads them all; returns
/// what the listener got. Both are members already.
fn talk(talker: &mut Peer, listener: &mut Peer, lines: usize, padding: &[u8]) -> Tally {
    thread::scope(|scope| {
        let nick = talker.nick.clone();
        // The talker's own lines come back to it; reading them keeps it a
        // healthy reader too.
        scope.spawn(move || {
            let heard = flood_and_read(talker, lines, lines, padding);
            assert_eq!(heard.count_from(&nick), lines);
        });
        read_all(listener, lines, padding)
    })
}

#[test]
fn a_client_that_never_reads_is_cut_for_stalling_while_the_others_get_everything() {
    const LINES: usize = 5_000;
    let _heavy = one_at_a_time();
    let pki = Pki::new();
    let mut server = server_with(&pki, &["--stall-timeout", "1"]);
    let (mut talker, mut listener) = talker_and(server.addr, &pki.ca, None);
    let silent = Peer::connect(server.addr, &pki.ca, Some(4096));
    for peer in [&mut talker, &mut listener] {
        assert_eq!(
            peer.next_line(),
            format!("notice {} joined #lobby", silent.nick)
        );
    }

    let heard = talk(&mut talker, &mut listener, LINES, &padding());
    assert_eq!(heard.count_from(&talker.nick), LINES);
    let cut = server.wait_for_log(|line| line.contains("disconnected, stalled"));
    assert!(
        cut.contains(": disconnected, stalled: its connection took nothing for ")
            && cut.contains("(--stall-timeout 1 s)"),
        "{cut}"
    );
    // Everyone else is told, in the room's words.
    assert_eq!(
        listener.next_line(),
        format!("notice {} quit: too slow", silent.nick)
    );
    drop(silent);
    server.stop();
}

#[test]
fn a_reader_that_pauses_for_two_seconds_is_kept_and_loses_nothing() {
    const LINES: usize = 3_000;
    /// Longer than the socket buffers take to fill, shorter than the
    /// default stall timeout.
    const PAUSE: Duration = Duration::from_secs(2);
    let _heavy = one_at_a_time();
    let pki = Pki::new();
    let server = TestServer::start_with(&pki, test_limits());
    let (mut talker, mut pauser) = talker_and(server.addr, &pki.ca, Some(4096));
    let heard = flood_beside_a_pause(&mut talker, &mut pauser, LINES, PAUSE);
    assert_eq!(heard.count_from(&talker.nick), LINES, "{}", pauser.nick);
    assert!(heard.other.is_empty(), "{:?}", heard.other);
    server.stop();
}

/// The talker floods `lines` lines (and reads them back) while the pauser
/// reads nothing for `pause`, then everything; returns what the pauser got.
fn flood_beside_a_pause(
    talker: &mut Peer,
    pauser: &mut Peer,
    lines: usize,
    pause: Duration,
) -> Tally {
    let padding = padding();
    thread::scope(|scope| {
        let listening = scope.spawn(|| {
            // The pause is the behaviour under test, not a wait for
            // something: megabytes arrive meanwhile, far more than the
            // kernel holds for this socket, so its lines pile up at the
            // server.
            thread::sleep(pause);
            read_all(pauser, lines, &padding)
        });
        let nick = talker.nick.clone();
        let heard_back = flood_and_read(talker, lines, lines, &padding);
        assert_eq!(heard_back.count_from(&nick), lines);
        listening.join().unwrap()
    })
}

#[test]
fn a_steady_reader_at_a_tenth_of_the_rooms_pace_is_cut_for_lag() {
    /// The talker's pace: 200 lines of 1 KiB a second.
    const EVERY: Duration = Duration::from_millis(5);
    /// The slow reader's: 2 KiB every 100 ms, a tenth of that.
    const SIP: usize = 2048;
    const SIP_EVERY: Duration = Duration::from_millis(100);
    let _heavy = one_at_a_time();
    let pki = Pki::new();
    let mut server = server_with(&pki, &["--max-lag", "2"]);
    let (mut talker, slow) = talker_and(server.addr, &pki.ca, Some(4096));
    let slow_nick = slow.nick.clone();
    let stop = AtomicBool::new(false);
    let padding = padding();
    thread::scope(|scope| {
        let Peer {
            write,
            read,
            buffer,
            ..
        } = &mut talker;
        let (stop, padding) = (&stop, &padding);
        let start = Instant::now();
        scope.spawn(move || {
            send_paced(write, padding, EVERY, || {
                !stop.load(Ordering::SeqCst) && start.elapsed() < TIMEOUT
            })
        });
        scope.spawn(move || {
            // The talker reads its own lines as fast as they come, until
            // the slow reader's departure is announced.
            let mut tally = Tally::default();
            let mut notice = None;
            let end = read_lines(read, buffer, |line| {
                if line.starts_with(b"notice ") {
                    notice = Some(String::from_utf8_lossy(line).into_owned());
                    return false;
                }
                tally.take(line, padding);
                true
            });
            stop.store(true, Ordering::SeqCst);
            assert_eq!(end, None, "the talker was cut");
            assert_eq!(notice, Some(format!("notice {slow_nick} quit: too slow")));
        });
        scope.spawn(|| {
            let (sipped, _cut) = sip(&slow.socket, SIP, SIP_EVERY, stop);
            assert!(sipped > 0, "the slow reader never read");
        });
    });
    let cut = server.wait_for_log(|line| line.contains(": disconnected, "));
    assert!(
        cut.contains(": disconnected, too slow: ")
            && cut.contains("behind the room (--max-lag 2 s)"),
        "{cut}"
    );
    server.stop();
}

#[test]
fn past_the_memory_budget_senders_wait_and_nothing_is_dropped() {
    const LINES: usize = 4_000;
    const PAUSE: Duration = Duration::from_millis(1500);
    let _heavy = one_at_a_time();
    let pki = Pki::new();
    // 4 MiB of lines against a budget of 1 MiB: the hub must stop taking
    // lines while the paused reader holds them up.
    let mut server = server_with(&pki, &["--memory-budget", "1M"]);
    let (mut talker, mut pauser) = talker_and(server.addr, &pki.ca, Some(4096));
    let heard = flood_beside_a_pause(&mut talker, &mut pauser, LINES, PAUSE);
    assert_eq!(heard.count_from(&talker.nick), LINES);
    let overload = server.wait_for_log(|line| line.contains("overload"));
    assert!(
        overload.contains("(--memory-budget 1 MiB): taking no new lines until they catch up"),
        "{overload}"
    );
    let log = server.stop();
    assert!(
        !log.iter().any(|line| line.contains(": disconnected, ")),
        "{log:#?}"
    );
}

#[test]
fn a_slow_reader_that_keeps_taking_bytes_is_not_taken_for_stalled() {
    /// The talker's pace: 200 lines of 1 KiB a second, for longer than the
    /// default stall timeout.
    const EVERY: Duration = Duration::from_millis(5);
    const FOR: Duration = Duration::from_secs(7);
    /// The reader's: 800 bytes every 100 ms, far less than the kernel
    /// signals room for, but never nothing.
    const SIP: usize = 800;
    const SIP_EVERY: Duration = Duration::from_millis(100);
    let _heavy = one_at_a_time();
    let pki = Pki::new();
    // Lag is not what is tested here: only the stall rule may cut.
    let server = server_with(&pki, &["--max-lag", "600"]);
    let (mut talker, slow) = talker_and(server.addr, &pki.ca, Some(4096));
    let padding = padding();
    let done = AtomicBool::new(false);
    thread::scope(|scope| {
        let Peer {
            write,
            read,
            buffer,
            ..
        } = &mut talker;
        let padding = &padding;
        scope.spawn(move || {
            let start = Instant::now();
            send_paced(write, padding, EVERY, || start.elapsed() < FOR);
            // Its echo tells the reading side that this was the last.
            write.send(b"end\n").unwrap();
        });
        let done = &done;
        let sipper = scope.spawn(|| sip(&slow.socket, SIP, SIP_EVERY, done));
        // The talker reads its own lines back, and must not hear of a cut.
        let mut tally = Tally::default();
        let end = read_lines(read, buffer, |line| {
            if line.ends_with(b" end") {
                return false;
            }
            tally.take(line, padding);
            true
        });
        done.store(true, Ordering::SeqCst);
        assert_eq!(end, None, "the talker was cut");
        assert!(tally.other.is_empty(), "{:?}", tally.other);
        let (_sipped, cut) = sipper.join().unwrap();
        assert!(!cut, "the slow reader was cut");
    });
    let log = server.stop();
    assert!(
        !log.iter().any(|line| line.contains(": disconnected, ")),
        "{log:#?}"
    );
}

#[test]
fn a_client_that_resets_its_connection_is_not_called_too_slow() {
    const LINES: usize = 200;
    let _heavy = one_at_a_time();
    let pki = Pki::new();
    let server = TestServer::start_with(&pki, test_limits());
    let (mut talker, leaver) = talker_and(server.addr, &pki.ca, Some(4096));
    let leaver_nick = leaver.nick.clone();
    // Lines pile up for the leaver, then it resets the connection: the
    // writer's next send fails, or its reader sees the reset first.
    let heard = flood_and_read(&mut talker, LINES, LINES, &padding());
    assert_eq!(heard.count_from(&talker.nick), LINES);
    socket2::SockRef::from(&*leaver.socket)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(leaver);
    assert_eq!(talker.next_line(), format!("notice {leaver_nick} quit"));
    server.stop();
}

/// Both ends of a TLS connection over loopback: the server's, with the
/// kernel's unsent limit the server sets, and the client's, its receive
/// buffer pinned to `receive_buffer` bytes.
fn tls_pair(
    pki: &Pki,
    receive_buffer: usize,
) -> (Connection, Arc<TcpStream>, SocketAddr, ReadHalf) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Connected before the accept, so that the accept cannot wait.
    let socket = tcp_connect(addr, Some(receive_buffer));
    let (server_socket, peer) = listener.accept().unwrap();
    socket2::SockRef::from(&server_socket)
        .set_tcp_notsent_lowat(UNSENT_LIMIT)
        .unwrap();
    let ca = pki.ca.clone();
    let client = thread::spawn(move || tls_client(socket, addr, &ca));
    let config = tls::server_config(&pki.cert, &pki.key, None).unwrap();
    let mut conn = Connection::Server(ServerConnection::new(config).unwrap());
    duplex::handshake(&mut conn, &server_socket, TIMEOUT).unwrap();
    let (client_conn, client_socket) = client.join().unwrap();
    let (client_read, _) = duplex::split(client_conn, client_socket);
    (conn, Arc::new(server_socket), peer, client_read)
}

#[test]
fn a_shard_gives_back_to_the_budget_all_that_a_cut_client_held() {
    // One shard, two clients in one room: one reads everything, the other
    // nothing. The one that reads nothing is cut once more than 1 MiB waits
    // for it; every byte charged for the lines is back when the reader has
    // them all, though the two shared every line.
    const BEFORE_CUT: usize = 500;
    const LINES: usize = 2_000;
    const BATCH: usize = 100;
    const CAP: usize = 1024 * 1024;
    let _heavy = one_at_a_time();
    let pki = Pki::new();
    let policy = Policy {
        max_pending: CAP,
        // Neither clock cuts during the test: only the cap does.
        stall_timeout: Duration::from_secs(60),
        max_lag: Duration::from_secs(60),
        ..Policy::default()
    };
    let budget = Budget::new(&policy);
    let panicked = Arc::new(AtomicBool::new(false));
    let alarm = Arc::clone(&panicked);
    let settings = ShardSettings {
        policy,
        linger: Duration::from_secs(1),
    };
    let (shard, writer) = shard::spawn(
        0,
        settings,
        Arc::clone(&budget),
        Box::new(move || alarm.store(true, Ordering::SeqCst)),
    )
    .unwrap();
    let (finished, let_go) = crossbeam_channel::unbounded();
    let mut clients = Vec::new();
    for (id, receive_buffer) in [(1, 64 * 1024), (2, 4096)] {
        let (conn, socket, peer, client_read) = tls_pair(&pki, receive_buffer);
        let (_, write) = duplex::split(conn, socket);
        let fate = Arc::new(Fate::default());
        let finished = finished.clone();
        let slot = shard
            .register(Registration {
                id: ClientId(id),
                peer,
                write,
                fate: Arc::clone(&fate),
                on_done: Box::new(move |sent| finished.send((id, sent)).unwrap()),
            })
            .unwrap();
        shard.send(Work::Enter(slot, RoomId(7)));
        clients.push((slot, fate, client_read));
    }
    let (reader, sleeper) = (clients.remove(0), clients.remove(0));
    let padding = String::from_utf8(padding()).unwrap();
    let deliver = |lines: std::ops::Range<usize>| {
        let mut batch: Vec<Work> = lines
            .map(|n| Work::Deliver {
                line: Outgoing::new(format!("chat x {n} {padding}\n"), &budget),
                to: To::Room {
                    room: RoomId(7),
                    except: None,
                },
            })
            .collect();
        shard.send_all(&mut batch);
    };
    let (reader_slot, reader_fate, mut reader_read) = reader;
    let (sleeper_slot, sleeper_fate, _sleeper_read) = sleeper;

    // A hundred lines at a time, each read whole before the next: the
    // reader never has much waiting; the sleeper's lines pile up.
    let mut buffer = Vec::new();
    let mut tally = Tally::default();
    let mut cut_after = None;
    for start in (0..LINES).step_by(BATCH) {
        deliver(start..start + BATCH);
        let end = read_lines(&mut reader_read, &mut buffer, |line| {
            tally.take(line, padding.as_bytes());
            tally.total() < start + BATCH
        });
        assert_eq!(
            end,
            None,
            "the reader was cut: {:?}",
            reader_fate.cut_reason()
        );
        if start + BATCH == BEFORE_CUT {
            // Most of these still wait for the sleeper, whose kernel holds
            // at most the unsent limit and a small window.
            let held = budget.used();
            assert!(held > BEFORE_CUT * 1000 / 2, "only {held} bytes counted");
        }
        if cut_after.is_none() && sleeper_fate.cut_reason().is_some() {
            cut_after = Some(start + BATCH);
        }
    }
    assert_eq!(tally.count_from("x"), LINES, "the reader lost nothing");
    assert!(reader_fate.cut_reason().is_none());
    // Cut by the batch in which its queue passed the cap, not before.
    let cut_after = cut_after.expect("the sleeper was never cut");
    assert!(
        (CAP / 1100..CAP / 1000 + 500).contains(&cut_after),
        "cut after {cut_after} lines"
    );
    let reason = sleeper_fate.cut_reason().unwrap();
    assert!(
        reason.starts_with("too slow: ")
            && reason.ends_with(" bytes waiting for it (--max-pending 1048576)"),
        "{reason}"
    );
    assert!(sleeper_fate.too_slow());
    // The sleeper's lines were refunded when it was cut, the reader's as
    // they went; shared lines were counted once, so nothing is left, and
    // nothing was refunded twice (which would wrap the count around).
    assert!(
        wait_until(|| budget.used() == 0),
        "{} bytes still counted",
        budget.used()
    );

    // Let both go, as the hub and their threads would, then stop the shard.
    for slot in [reader_slot, sleeper_slot] {
        shard.send(Work::Close(slot, CloseReason::Left));
        shard.send(Work::ReaderDone(slot));
    }
    let mut done: Vec<(u64, u64)> = (0..2)
        .map(|_| let_go.recv_timeout(TIMEOUT).expect("a client never let go"))
        .collect();
    done.sort();
    assert!(
        done[0].1 >= (LINES * 1000) as u64,
        "the reader got {} bytes",
        done[0].1
    );
    shard.send(Work::Shutdown);
    assert!(
        wait_until(|| writer.is_finished()),
        "the shard did not stop"
    );
    writer.join().unwrap();
    assert!(!panicked.load(Ordering::SeqCst));
    assert_eq!(budget.used(), 0);
}

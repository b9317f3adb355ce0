//! The client on a pseudo-terminal, as a person uses it: the prompt, a
//! line arriving while one is half typed, each line shown once, times,
//! history, Tab, and coming back after the server went away.
//!
//! rexpect gives the client a pseudo-terminal and reads what it draws;
//! every wait has a deadline. The terminal is given a size first (`stty`),
//! as a terminal emulator would: one of no size is not a screen, and the
//! client would take its plain path.

use secure_chat_test_support as support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::Receiver;
use rexpect::process::WaitStatus;
use rexpect::session::PtySession;
use secure_chat::server::{Server, Stopper};
use secure_chat::tls;
use support::{test_limits, Pki, TestClient, TestServer, CLIENT, TIMEOUT};

/// The client on a terminal of 100 by 30, without colours (so that the
/// text is easy to match), with `args` after `--addr` and `--ca`.
fn client_on_terminal(addr: SocketAddr, pki: &Pki, args: &[&str]) -> PtySession {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("stty cols 100 rows 30 && exec \"$0\" \"$@\"")
        .arg(CLIENT.path())
        .args(["--addr", &format!("localhost:{}", addr.port())])
        .arg("--ca")
        .arg(&pki.ca)
        .args(args)
        .env("NO_COLOR", "1")
        .env("TERM", "xterm")
        .env_remove("RUST_LOG");
    let timeout = u64::try_from(TIMEOUT.as_millis()).unwrap();
    rexpect::session::spawn_command(command, Some(timeout)).unwrap()
}

/// Waits for `text`; returns everything drawn before it.
fn expect(session: &mut PtySession, text: &str) -> String {
    session
        .exp_string(text)
        .unwrap_or_else(|err| panic!("waiting for {text:?}: {err}"))
}

/// Waits for `you are in ROOM`, then for the prompt drawn again below it.
fn expect_prompt(session: &mut PtySession, room: &str) -> String {
    expect(session, &format!("you are in {room}"));
    expect(session, "> ")
}

/// Types `text` (no Enter).
fn type_keys(session: &mut PtySession, text: &str) {
    session.send(text).unwrap();
    session.flush().unwrap();
}

/// Types `line` and Enter (a terminal sends a carriage return).
fn enter(session: &mut PtySession, line: &str) {
    type_keys(session, &format!("{line}\r"));
}

/// Waits for the client to exit; its exit code.
fn exit_code(session: &mut PtySession) -> i32 {
    session.exp_eof().unwrap();
    match session.process().wait().unwrap() {
        WaitStatus::Exited(_, code) => code,
        other => panic!("the client did not exit: {other:?}"),
    }
}

/// Everything up to and including `you are NICK` on the first connection.
fn nick_of(session: &mut PtySession) -> String {
    expect(session, "you are guest");
    let rest = expect(session, "\n");
    format!("guest{}", rest.trim())
}

#[test]
fn prompt_echo_once_and_a_line_arriving_mid_typing() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let mut session = client_on_terminal(server.addr, &pki, &[]);
    let me = nick_of(&mut session);
    expect_prompt(&mut session, "#lobby");

    // Half a line, then someone else speaks.
    let mut other = TestClient::connect(server.addr, &pki.ca);
    type_keys(&mut session, "half of a");
    other.send("interrupting!");
    expect(&mut session, &format!("<{}> interrupting!", other.nick));
    // The editor draws the prompt and the half line again below it.
    expect(&mut session, "half of a");
    enter(&mut session, " line");
    // The whole line went out, as typed across the interruption.
    assert_eq!(
        other.recv_until(|line| line.starts_with(&format!("chat {me} "))),
        format!("chat {me} half of a line")
    );
    let drawn = expect(&mut session, &format!("<{me}> half of a line"));
    // After Enter, the typed line was erased (cursor up, clear the row):
    // what stays on the screen is the server's echo, once.
    assert!(drawn.contains("\x1b[1A\x1b[2K"), "{drawn:?}");
    assert!(
        !drawn.contains(&format!("<{me}> half")),
        "shown before the echo: {drawn:?}"
    );
    enter(&mut session, "bye");
    expect(&mut session, "Ciao, Buonanotte!");
    assert_eq!(exit_code(&mut session), 0);
    server.stop();
}

#[test]
fn times_on_a_terminal_unless_no_timestamps() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);

    let mut stamped = client_on_terminal(server.addr, &pki, &[]);
    // The client's own lines too.
    stamped.exp_regex(r"\d\d:\d\d --- connected to").unwrap();
    let (_, found) = stamped
        .exp_regex(r"\d\d:\d\d \*\*\* Welcome to the secure chat server!")
        .unwrap();
    assert_eq!(
        found.len(),
        "12:34 *** Welcome to the secure chat server!".len()
    );
    enter(&mut stamped, "bye");
    assert_eq!(exit_code(&mut stamped), 0);

    let mut plain = client_on_terminal(server.addr, &pki, &["--no-timestamps"]);
    // Each line starts at the start of a row (after a line end, or after
    // the editor cleared the prompt's row), with nothing in front.
    for line in ["--- connected to", "*** Welcome", "*** you are guest"] {
        let before = expect(&mut plain, line);
        assert!(
            before.ends_with('\n') || before.ends_with("\r\x1b[K"),
            "something before {line:?}: {before:?}"
        );
    }
    enter(&mut plain, "bye");
    assert_eq!(exit_code(&mut plain), 0);
    server.stop();
}

#[test]
fn up_arrow_recalls_the_last_line_and_tab_completes_commands() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let mut session = client_on_terminal(server.addr, &pki, &["--nick", "histo"]);
    expect(&mut session, "you are now histo");
    expect(&mut session, "> ");
    enter(&mut session, "said once");
    expect(&mut session, "<histo> said once");
    // Up arrow, Enter: the same line again.
    enter(&mut session, "\x1b[A");
    expect(&mut session, "<histo> said once");

    // Tab: /jo becomes /join.
    type_keys(&mut session, "/jo\t");
    expect(&mut session, "/join ");
    enter(&mut session, "#tabbed");
    expect(&mut session, "you are in #tabbed");
    let mut witness = TestClient::connect(server.addr, &pki.ca);
    witness.send("/whois histo");
    assert_eq!(
        witness.recv_until(|line| line.contains(" is in ")),
        "notice histo is in #tabbed"
    );
    enter(&mut session, "/quit");
    assert_eq!(exit_code(&mut session), 0);
    server.stop();
}

#[test]
fn tab_completes_the_nicks_of_the_room() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let mut session = client_on_terminal(server.addr, &pki, &[]);
    let me = nick_of(&mut session);
    expect_prompt(&mut session, "#lobby");
    let mut other = TestClient::connect(server.addr, &pki.ca);
    other.send("/nick zebedee");
    expect(&mut session, "is now zebedee");
    type_keys(&mut session, "hi zeb\t");
    expect(&mut session, "zebedee ");
    enter(&mut session, "there");
    assert_eq!(
        other.recv_until(|line| line.starts_with(&format!("chat {me} "))),
        format!("chat {me} hi zebedee there")
    );
    enter(&mut session, "bye");
    assert_eq!(exit_code(&mut session), 0);
    server.stop();
}

#[test]
fn tab_completes_rooms_from_a_rooms_answer() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let mut other = TestClient::connect(server.addr, &pki.ca);
    other.send("/join #rustacean");
    other.recv_until(|line| line.starts_with("notice you are in #rustacean"));
    let mut session = client_on_terminal(server.addr, &pki, &[]);
    let me = nick_of(&mut session);
    expect_prompt(&mut session, "#lobby");
    enter(&mut session, "/rooms");
    expect(&mut session, "#rustacean (1)");
    type_keys(&mut session, "/join #rusta\t");
    expect(&mut session, "#rustacean ");
    enter(&mut session, "");
    expect(&mut session, "you are in #rustacean");
    assert_eq!(
        other.recv_until(|line| line.contains(" joined ")),
        format!("notice {me} joined #rustacean")
    );
    enter(&mut session, "bye");
    assert_eq!(exit_code(&mut session), 0);
    server.stop();
}

/// A server of our own on a port we choose, so that another can take the
/// same port after it stops, with the same TLS configuration (and so the
/// same ticket key: a client can resume with the new one).
struct Restartable {
    config: Arc<rustls::ServerConfig>,
    addr: SocketAddr,
    running: Option<(Stopper, Receiver<()>)>,
}

impl Restartable {
    fn start(pki: &Pki) -> Restartable {
        let config = tls::server_config(&pki.cert, &pki.key, None).unwrap();
        let mut server = Restartable {
            config,
            addr: "127.0.0.1:0".parse().unwrap(),
            running: None,
        };
        server.start_again();
        server
    }

    fn start_again(&mut self) {
        let server = Server::bind(
            &self.addr.to_string(),
            Arc::clone(&self.config),
            test_limits(),
        )
        .unwrap();
        self.addr = server.local_addr();
        let stopper = server.stopper();
        let (done, finished) = crossbeam_channel::bounded(1);
        thread::spawn(move || {
            server.run().unwrap();
            let _ = done.send(());
        });
        self.running = Some((stopper, finished));
    }

    fn stop(&mut self) {
        if let Some((stopper, finished)) = self.running.take() {
            stopper.stop();
            finished
                .recv_timeout(TIMEOUT)
                .expect("the server did not stop");
        }
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn a_dropped_connection_comes_back_resumed_in_its_nick_and_room() {
    let pki = Pki::new();
    let mut server = Restartable::start(&pki);
    let mut session = client_on_terminal(server.addr, &pki, &["--nick", "alice"]);
    expect(&mut session, "you are now alice");
    enter(&mut session, "/join #rust");
    expect(&mut session, "you are in #rust");

    server.stop();
    expect(&mut session, "server shutting down");
    let line = expect(&mut session, "(attempt 1)");
    assert!(line.contains("reconnecting in "), "{line:?}");
    // While away, a line typed is kept for later.
    enter(&mut session, "typed while away");
    expect(&mut session, "kept, to be sent once back (1 waiting)");
    server.start_again();
    let attempts = expect(&mut session, "reconnected to");
    // One line per attempt: each says when the next comes.
    for line in attempts
        .lines()
        .filter(|line| line.contains("could not reconnect"))
    {
        assert!(line.contains("reconnecting in "), "{line:?}");
    }
    expect(&mut session, "(TLS session resumed)");
    // A new server knows no secret: the nick is asked for again, then the
    // room joined again.
    expect(&mut session, "you are now alice");
    expect(&mut session, "you are in #rust");
    expect(&mut session, "<alice> typed while away");

    let mut witness = TestClient::connect(server.addr, &pki.ca);
    witness.send("/whois alice");
    assert_eq!(
        witness.recv_until(|line| line.contains(" is in ")),
        "notice alice is in #rust"
    );
    drop(witness);

    // Leaving ends it: no reconnect after bye.
    enter(&mut session, "bye");
    let rest = expect(&mut session, "Ciao, Buonanotte!");
    assert!(!rest.contains("reconnecting"), "{rest:?}");
    let code = exit_code(&mut session);
    assert_eq!(code, 0);
    server.stop();
}

#[test]
fn no_reconnect_exits_when_the_connection_drops() {
    let pki = Pki::new();
    let mut server = Restartable::start(&pki);
    let mut session = client_on_terminal(server.addr, &pki, &["--no-reconnect"]);
    expect_prompt(&mut session, "#lobby");
    server.stop();
    let before = expect(&mut session, "not reconnecting (--no-reconnect)");
    assert!(!before.contains("reconnecting in"), "{before:?}");
    assert_eq!(exit_code(&mut session), 0);
}

#[test]
fn the_secret_is_never_shown() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let mut session = client_on_terminal(server.addr, &pki, &["--nick", "keeper"]);
    expect(&mut session, "you are now keeper");
    enter(&mut session, "/nick keeper2");
    expect(&mut session, "you are now keeper2");
    enter(&mut session, "bye");
    let seen = expect(&mut session, "Ciao, Buonanotte!");
    assert_eq!(exit_code(&mut session), 0);
    assert!(!seen.contains("token"), "{seen:?}");
    assert!(!seen.contains("secret"), "{seen:?}");
    server.stop();
}

/// A TCP relay between the client and the server that can cut the
/// client's side alone: the server's end stays open, as when a network
/// drops and the server cannot know yet. Its connection is then a ghost,
/// which still holds the nick.
struct Relay {
    addr: SocketAddr,
    /// Set when dropped: the accepting thread ends at its next wake-up.
    stopped: Arc<std::sync::atomic::AtomicBool>,
    /// While set, a new client is closed at once, before anything reaches
    /// the server: as a server that is not back yet, to the client.
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// Every connection's two ends, kept open here so that a copying
    /// thread that ends closes nothing.
    ends: Arc<std::sync::Mutex<Vec<(std::net::TcpStream, std::net::TcpStream)>>>,
}

impl Relay {
    fn start(server: SocketAddr) -> Relay {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let ends = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = Arc::clone(&ends);
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = Arc::clone(&stopped);
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refuse = Arc::clone(&closed);
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { return };
                if refuse.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(server) else {
                    return;
                };
                let copy = |from: &TcpStream, to: &TcpStream| {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                    });
                };
                copy(&client, &upstream);
                copy(&upstream, &client);
                kept.lock().unwrap().push((client, upstream));
            }
        });
        Relay {
            addr,
            stopped,
            closed,
            ends,
        }
    }

    /// Closes new clients at once (`true`), or relays them again.
    fn close_to_newcomers(&self, closed: bool) {
        self.closed
            .store(closed, std::sync::atomic::Ordering::SeqCst);
    }

    /// Cuts every client's side; the server's sides stay open.
    fn cut_clients(&self) {
        for (client, _) in self.ends.lock().unwrap().iter() {
            let _ = client.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accepting thread to see the flag.
        let _ = std::net::TcpStream::connect(self.addr);
        for (client, upstream) in self.ends.lock().unwrap().drain(..) {
            let _ = client.shutdown(std::net::Shutdown::Both);
            let _ = upstream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The network drops, but the server still holds the old connection: the
/// client comes back through a new one, takes its nick back from the
/// ghost with its secret, and returns to its room; for the room, it never
/// left.
#[test]
fn a_reconnect_takes_the_nick_back_from_the_ghost_of_the_old_connection() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let relay = Relay::start(server.addr);
    let mut session = client_on_terminal(relay.addr, &pki, &["--nick", "alice"]);
    expect(&mut session, "you are now alice");
    enter(&mut session, "/join #rust");
    expect_prompt(&mut session, "#rust");
    let mut bob = TestClient::connect(server.addr, &pki.ca);
    bob.send("/join #rust");
    bob.recv_until(|line| line.starts_with("notice you are in #rust"));
    expect(&mut session, &format!("{} joined #rust", bob.nick));

    relay.cut_clients();
    expect(&mut session, "reconnecting in ");
    expect(&mut session, "reconnected to");
    expect(&mut session, "you are alice again");
    expect(&mut session, "you are in #rust (2 people here)");

    // For bob, alice never left, and the old connection is gone.
    bob.send("/who");
    assert_eq!(
        bob.recv(),
        format!("notice in #rust (2): alice, {}", bob.nick)
    );
    enter(&mut session, "still here");
    assert_eq!(bob.recv(), "chat alice still here");
    enter(&mut session, "bye");
    expect(&mut session, "Ciao, Buonanotte!");
    assert_eq!(exit_code(&mut session), 0);
    server.stop();
}

/// A refusal that says it may pass (`try again later`) is tried again,
/// and the client gets in once there is room.
#[test]
fn a_full_server_is_tried_again_until_there_is_room() {
    let pki = Pki::new();
    let limits = secure_chat::server::Limits {
        max_clients: 1,
        ..test_limits()
    };
    let server = TestServer::start_with(&pki, limits);
    let seat = TestClient::connect(server.addr, &pki.ca);
    let mut session = client_on_terminal(server.addr, &pki, &[]);
    expect(&mut session, "server full (1 clients); try again later");
    expect(&mut session, "refused for now");
    expect(&mut session, "reconnecting in ");
    drop(seat);
    expect_prompt(&mut session, "#lobby");
    enter(&mut session, "bye");
    expect(&mut session, "Ciao, Buonanotte!");
    assert_eq!(exit_code(&mut session), 0);
    server.stop();
}

/// The server restarted and forgot the secret, and someone took the nick
/// before the client came back (as when its ghost holds it on another
/// server behind a load balancer): it comes back as a guest in the lobby.
/// The line typed while away, as alice in #rust, is not posted there under
/// the guest's name: it stays with the user, who is told why.
#[test]
fn back_as_someone_else_the_lines_typed_while_away_stay_with_the_user() {
    let pki = Pki::new();
    let mut server = Restartable::start(&pki);
    let relay = Relay::start(server.addr);
    let mut session = client_on_terminal(relay.addr, &pki, &["--nick", "alice"]);
    expect(&mut session, "you are now alice");
    enter(&mut session, "/join #rust");
    expect_prompt(&mut session, "#rust");

    // Until the nick is taken, the client cannot get back in.
    relay.close_to_newcomers(true);
    server.stop();
    expect(&mut session, "(attempt 1)");
    enter(&mut session, "typed while away");
    expect(&mut session, "kept, to be sent once back (1 waiting)");
    server.start_again();
    let mut thief = TestClient::connect(server.addr, &pki.ca);
    thief.send("/nick alice");
    thief.recv_until(|line| line == "notice you are now alice");
    relay.close_to_newcomers(false);

    expect(&mut session, "reconnected to");
    expect(
        &mut session,
        "not sent (typed as alice in #rust, and this connection is guest",
    );
    expect(&mut session, "in #lobby): typed while away");
    // Whatever the client sent before this line reached the thief first.
    enter(&mut session, "a marker");
    loop {
        let line = thief.recv();
        assert!(!line.contains("typed while away"), "{line}");
        if line.ends_with(" a marker") {
            break;
        }
    }
    enter(&mut session, "bye");
    expect(&mut session, "Ciao, Buonanotte!");
    assert_eq!(exit_code(&mut session), 0);
    drop(relay);
    server.stop();
}

/// A restarted server may give the new connection the very guest name the
/// old one had: the client's `/reclaim` is then answered `you are already
/// NICK`, which is being back, and what is typed goes out.
#[test]
fn coming_back_under_the_same_guest_name_is_being_back() {
    let pki = Pki::new();
    let mut server = Restartable::start(&pki);
    let mut session = client_on_terminal(server.addr, &pki, &[]);
    let me = nick_of(&mut session);
    expect_prompt(&mut session, "#lobby");
    server.stop();
    expect(&mut session, "(attempt 1)");
    server.start_again();
    expect(&mut session, "reconnected to");
    expect(&mut session, &format!("you are already {me}"));
    let witness = TestClient::connect(server.addr, &pki.ca);
    expect(&mut session, &format!("{} joined #lobby", witness.nick));
    enter(&mut session, "after the restart");
    assert_eq!(
        witness.recv_until(|line| line.starts_with("chat ")),
        format!("chat {me} after the restart")
    );
    enter(&mut session, "bye");
    expect(&mut session, "Ciao, Buonanotte!");
    assert_eq!(exit_code(&mut session), 0);
    server.stop();
}

/// Two servers linked through Redis, as a person at a terminal sees them:
/// someone on the other server speaks while a line is half typed, the
/// link goes down and comes back, and each is said on its own line with
/// the half line drawn again below.
#[cfg(feature = "redis")]
#[test]
fn linked_servers_on_a_terminal_lines_from_elsewhere_and_the_link_going_down() {
    let mut redis = support::Redis::start(&[]);
    let pki = Pki::new();
    let link = support::quick_link;
    let a = TestServer::start_linked(&pki, test_limits(), &redis.url(), "a", link());
    let b = TestServer::start_linked(&pki, test_limits(), &redis.url(), "b", link());
    let mut session = client_on_terminal(a.addr, &pki, &["--nick", "alice"]);
    expect(&mut session, "you are now alice");
    redis.wait_subscribed("#lobby", 1);
    let mut bob = TestClient::connect(b.addr, &pki.ca);
    bob.send("/nick bob");
    bob.recv_until(|line| line == "notice you are now bob");
    expect(&mut session, "is now bob");

    type_keys(&mut session, "half of a");
    bob.send("hello from b");
    expect(&mut session, "<bob> hello from b");
    expect(&mut session, "half of a");
    enter(&mut session, " line");
    assert_eq!(
        bob.recv_until(|line| line.starts_with("chat alice ")),
        "chat alice half of a line"
    );

    redis.stop();
    expect(&mut session, "*** the link to the other servers is down");
    expect(&mut session, "you will be told when it is back");
    redis.spawn(&[]);
    expect(&mut session, "*** the link to the other servers is back");
    enter(&mut session, "/quit");
    assert_eq!(exit_code(&mut session), 0);
    drop(bob);
    a.stop();
    b.stop();
}

//! The chat-server binary and its signals: SIGTERM and SIGINT stop it
//! gracefully within two seconds, a second signal at once; SIGHUP reloads
//! the certificate, key and client CA, or keeps the old ones if the new
//! files are unusable.

use secure_chat_test_support as support;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use secure_chat::client::{self, ClientOptions};
use secure_chat::error::report;
use secure_chat::tls::{Identity, Trust};
use support::{
    cert_args, finish, ClientFlaw, Incoming, Pki, ServerProcess, SilentClient, TempDir, TestClient,
    TIMEOUT,
};

/// The issue's bound on a graceful stop, from the signal to the exit.
const STOP_WITHIN: Duration = Duration::from_secs(2);

const SHUTDOWN_NOTICE: &str = "notice server shutting down, goodbye";

/// Connects a client, which has joined once this returns.
fn join(server: &ServerProcess, ca: &Path) -> TestClient {
    TestClient::connect(server.addr, ca)
}

/// Sends a line and waits for it to come back.
fn chats(client: &mut TestClient, text: &str) {
    client.send(text);
    let echo = format!("chat {} {text}", client.nick);
    client.recv_until(|line| line == echo);
}

/// Connects with the library's client; returns its error, or panics if
/// the handshake succeeded.
fn refused_handshake(server: &ServerProcess, ca: &Path, identity: Option<Identity>) -> String {
    let options = ClientOptions {
        addr: format!("localhost:{}", server.addr.port()),
        server_name: None,
        trust: Trust::CaFile(ca.to_owned()),
        identity,
        timeout: TIMEOUT,
    };
    match client::connect(&options) {
        Ok(_) => panic!("the handshake succeeded"),
        Err(err) => report(&err),
    }
}

/// Three clients chatting, then `signal`: each is told and sees a clean
/// close_notify, and the server exits 0 within two seconds.
fn stops_gracefully_on(signal: &str) {
    let pki = Pki::new();
    let mut server = ServerProcess::start(&cert_args(&pki.cert, &pki.key));
    let mut clients: Vec<TestClient> = (0..3).map(|_| join(&server, &pki.ca)).collect();
    for client in &mut clients {
        chats(client, "before the signal");
    }
    // None of them answers the server's close_notify: the slow case, in
    // which each connection waits out the server's linger time.
    let sent = server.signal(signal);
    for client in &clients {
        client.recv_until(|line| line == SHUTDOWN_NOTICE);
        assert_eq!(client.next(), Incoming::Closed, "{}", client.nick);
    }
    let (status, exited) = server.wait_for_exit();
    assert_eq!(status.code(), Some(0), "{:#?}", server.seen);
    let took = exited - sent;
    assert!(took < STOP_WITHIN, "took {took:?}: {:#?}", server.seen);
    assert!(server.seen.iter().any(|line| line.ends_with("stopped")));
}

#[test]
fn sigterm_tells_every_client_and_exits_0_within_2_s() {
    stops_gracefully_on("-TERM");
}

#[test]
fn sigint_tells_every_client_and_exits_0_within_2_s() {
    stops_gracefully_on("-INT");
}

#[test]
fn sigterm_with_a_stuck_client_still_exits_0_within_2_s() {
    let pki = Pki::new();
    let mut args = cert_args(&pki.cert, &pki.key);
    // No flood control, and a stall timeout long enough that the silent
    // client is not cut as stalled: its lines stay waiting at shutdown.
    args.extend(["--rate", "0", "--stall-timeout", "60"].map(OsStr::new));
    let mut server = ServerProcess::start(&args);
    let _silent = SilentClient::connect(server.addr, &pki.ca);
    server.wait_for_log(|line| line.contains(": joined as "));
    let mut talker = join(&server, &pki.ca);

    // More than the silent client's receive buffer and the server's send
    // buffer can hold (Linux: tcp_rmem's default plus tcp_wmem's maximum,
    // 128 KiB + 4 MiB), so its writer blocks.
    let buffers = stuck_bytes();
    let line = "x".repeat(1024 - 10);
    let lines = buffers / 1024 + 1;
    let mut batch = String::new();
    for n in 0..lines {
        batch.push_str(&format!("{n:08} {line}\n"));
        if batch.len() >= 64 * 1024 || n + 1 == lines {
            talker.send_raw(batch.as_bytes());
            batch.clear();
        }
    }
    // The talker's own last line back: the hub has queued every line for
    // the silent client too.
    let last = format!("{:08} ", lines - 1);
    talker.recv_until(|text| text.contains(&last));

    let sent = server.signal("-TERM");
    talker.recv_until(|line| line == SHUTDOWN_NOTICE);
    assert_eq!(talker.next(), Incoming::Closed);
    let (status, exited) = server.wait_for_exit();
    assert_eq!(status.code(), Some(0), "{:#?}", server.seen);
    let took = exited - sent;
    assert!(took < STOP_WITHIN, "took {took:?}: {:#?}", server.seen);
    // The silent client really was stuck: the server had to cut it.
    assert!(
        server
            .seen
            .iter()
            .any(|line| line.contains("cutting connections that did not close in time")),
        "{:#?}",
        server.seen
    );
}

/// Bytes that surely do not fit in a never-read loopback connection's
/// buffers: the receiver's initial buffer plus the sender's largest, twice.
fn stuck_bytes() -> usize {
    let third = |path: &str, default: usize| {
        fs::read_to_string(path)
            .ok()
            .and_then(|text| text.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or(default)
    };
    let second = |path: &str, default: usize| {
        fs::read_to_string(path)
            .ok()
            .and_then(|text| text.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(default)
    };
    let send_max = third("/proc/sys/net/ipv4/tcp_wmem", 4 << 20);
    let receive_initial = second("/proc/sys/net/ipv4/tcp_rmem", 128 << 10);
    2 * (send_max + receive_initial)
}

#[test]
fn second_signal_exits_at_once() {
    let pki = Pki::new();
    let mut server = ServerProcess::start(&cert_args(&pki.cert, &pki.key));
    // A member that never answers close_notify: a graceful stop waits for
    // it for the server's linger time (1 s) before cutting it.
    let _silent = SilentClient::connect(server.addr, &pki.ca);
    server.wait_for_log(|line| line.contains(": joined as "));

    server.signal("-TERM");
    // The first signal has been taken, and the graceful stop is under way.
    server.wait_for_log(|line| line.contains("stopping: closing every connection"));
    assert!(!server.has_exited(), "the graceful stop was already over");
    let second = server.signal("-TERM");
    let (status, exited) = server.wait_for_exit();
    assert_eq!(status.code(), Some(128 + 15), "{:#?}", server.seen);
    // At once: the graceful stop would still be waiting for the silent
    // client for most of a second.
    let took = exited - second;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        !server.seen.iter().any(|line| line.ends_with("stopped")),
        "{:#?}",
        server.seen
    );
}

/// A directory holding the files the server is started with, so a test
/// can replace them.
struct ServerFiles {
    /// Removed with the files when the test ends.
    _dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
}

impl ServerFiles {
    fn copy_of(pki: &Pki) -> ServerFiles {
        let dir = TempDir::new();
        let files = ServerFiles {
            cert: dir.path().join("server.crt"),
            key: dir.path().join("server.key"),
            client_ca: dir.path().join("client-ca.crt"),
            _dir: dir,
        };
        files.replace_with(pki);
        files
    }

    /// Overwrites every file with `pki`'s.
    fn replace_with(&self, pki: &Pki) {
        fs::copy(&pki.cert, &self.cert).unwrap();
        fs::copy(&pki.key, &self.key).unwrap();
        fs::copy(&pki.signer, &self.client_ca).unwrap();
    }
}

const RELOADED: &str = "reloaded the certificate, key and client CA";
const RELOAD_FAILED: &str = "reload failed, still using the previous files";

#[test]
fn sighup_serves_new_connections_with_the_new_certificate() {
    let (a, b) = (Pki::new(), Pki::new());
    let files = ServerFiles::copy_of(&a);
    let mut server = ServerProcess::start(&cert_args(&files.cert, &files.key));
    let mut old = join(&server, &a.ca);

    files.replace_with(&b);
    server.signal("-HUP");
    server.wait_for_log(|line| line.ends_with(RELOADED));

    let mut new = join(&server, &b.ca);
    chats(&mut new, "hello from the new certificate");
    let refusal = refused_handshake(&server, &a.ca, None);
    assert!(refusal.contains("certificate not trusted"), "{refusal}");
    // The session from before the reload carries on.
    chats(&mut old, "hello from before the reload");
    assert_eq!(
        new.recv_until(|line| line.starts_with("chat ")),
        format!("chat {} hello from before the reload", old.nick)
    );
    server.stop();
}

#[test]
fn sighup_reloads_the_client_ca() {
    let (a, b) = (Pki::new(), Pki::new());
    let files = ServerFiles::copy_of(&a);
    let mut args = cert_args(&files.cert, &files.key);
    args.extend([OsStr::new("--client-ca"), files.client_ca.as_os_str()]);
    let mut server = ServerProcess::start(&args);
    let alice = a.client_identity("alice", ClientFlaw::None);
    let mut old = TestClient::connect_as(server.addr, &a.ca, &alice);
    old.nick = "alice".into();
    old.recv_until(|line| line == "notice you are alice");

    // The server keeps its certificate (A's) and now trusts B's clients.
    fs::copy(&b.signer, &files.client_ca).unwrap();
    server.signal("-HUP");
    server.wait_for_log(|line| line.ends_with(RELOADED));

    let bob = b.client_identity("bob", ClientFlaw::None);
    let mut new = TestClient::connect_as(server.addr, &a.ca, &bob);
    new.nick = "bob".into();
    new.recv_until(|line| line == "notice you are bob");
    chats(&mut new, "signed by the new CA");

    let carol = a.client_identity("carol", ClientFlaw::None);
    let refused = TestClient::connect_as(server.addr, &a.ca, &carol);
    match refused.expect_end() {
        // Both test CAs are called "test CA": the server finds B's by
        // name, and the signature does not verify with its key.
        Incoming::Failed(why) => assert!(why.contains("DecryptError"), "{why}"),
        other => panic!("a client of the old CA was not refused: {other:?}"),
    }
    chats(&mut old, "from before the reload");
    server.stop();
}

#[test]
fn sighup_with_a_broken_key_keeps_the_previous_files() {
    let (a, b) = (Pki::new(), Pki::new());
    let files = ServerFiles::copy_of(&a);
    let mut server = ServerProcess::start(&cert_args(&files.cert, &files.key));
    let mut old = join(&server, &a.ca);

    // B's certificate with a key that is not one: nothing of B is used.
    fs::copy(&b.cert, &files.cert).unwrap();
    fs::write(&files.key, "this is not a key\n").unwrap();
    server.signal("-HUP");
    let failed = server.wait_for_log(|line| line.contains(RELOAD_FAILED));
    assert!(
        failed.contains(&files.key.display().to_string()),
        "the log does not name the bad file: {failed}"
    );

    let mut new = join(&server, &a.ca);
    chats(&mut new, "still the old certificate");
    chats(&mut old, "still here");

    // Once the files are good again, the next SIGHUP takes them.
    fs::copy(&b.key, &files.key).unwrap();
    server.signal("-HUP");
    server.wait_for_log(|line| line.ends_with(RELOADED));
    let mut newer = join(&server, &b.ca);
    chats(&mut newer, "now the new certificate");
    server.stop();
}

/// A supervisor may signal the server as soon as it says it listens (a
/// reload right after a start, a stop right after a failed health check).
/// That signal must be handled, not kill the server with the default action.
#[test]
fn signal_sent_as_soon_as_the_server_listens_is_handled() {
    let pki = Pki::new();
    // The window is short: a few attempts in a hundred hit it. Bounded in
    // time too, so a slow machine does not make the test slow.
    let started = Instant::now();
    for attempt in 1..=500 {
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
        let mut server = ServerProcess::spawn(&cert_args(&pki.cert, &pki.key));
        // A shell that sends SIGHUP the moment it reads a line: no process
        // to start between seeing the log line and signalling.
        let mut sender = Command::new("sh")
            .args(["-c", r#"read -r go && kill -HUP "$1""#, "sh"])
            .arg(server.pid.to_string())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let mut go = sender.stdin.take().unwrap();
        server.wait_until_listening();
        go.write_all(b"go\n").unwrap();
        drop(go);
        finish(sender);
        if server
            .wait_for_log_or_end(|line| line.ends_with(RELOADED))
            .is_none()
        {
            let (status, _) = server.wait_for_exit();
            panic!(
                "attempt {attempt}: SIGHUP right after `listening on` ended the server \
                 ({status}): {:#?}",
                server.seen
            );
        }
        server.stop();
    }
}

#[test]
fn sigterm_while_flood_control_holds_a_clients_lines_still_exits_0_within_2_s() {
    let pki = Pki::new();
    // The server's own flood control (20 lines at once, then 5 a second):
    // 300 lines in one write hold its reading thread for about a minute.
    let mut server = ServerProcess::start(&cert_args(&pki.cert, &pki.key));
    let mut flooder = join(&server, &pki.ca);
    let mut lines = String::new();
    for n in 0..300 {
        lines.push_str(&format!("{n}\n"));
    }
    flooder.send_raw(lines.as_bytes());
    flooder.recv_until(|line| line.starts_with("error you are sending too fast"));

    let sent = server.signal("-TERM");
    let (status, exited) = server.wait_for_exit();
    assert_eq!(status.code(), Some(0), "{:#?}", server.seen);
    let took = exited - sent;
    assert!(took < STOP_WITHIN, "took {took:?}: {:#?}", server.seen);
    assert!(
        !server.seen.iter().any(|line| line.contains("did not end")),
        "{:#?}",
        server.seen
    );
}

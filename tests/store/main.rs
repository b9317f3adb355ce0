//! The store, through the chat-server binary: rooms come back after a
//! restart and after `kill -9` (losing at most the last moment); a data
//! directory that cannot be written, or fills, only warns; a damaged file
//! and a directory in use are refused at start, and nothing is replaced.

use secure_chat_test_support as support;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use secure_chat::tls::Fingerprint;
use support::{
    cert_args, run, test_limits, wait_until, ClientFlaw, Pki, ServerProcess, TempDir, TestClient,
    TestServer, SERVER,
};

mod faults;

/// What the README promises a `kill -9` loses at most: the lines said in
/// the last second before it. (What is lost is what waited for the
/// writer: the lines of its gathering pause and of the transaction in
/// hand, measured in `kill_9_during_a_steady_chat_...`.)
const KILL_WINDOW: Duration = Duration::from_secs(1);

/// `chat-server` keeping its rooms in `data`, with flood control off.
fn kept(pki: &Pki, data: &Path, extra: &[&str]) -> ServerProcess {
    let mut args = cert_args(&pki.cert, &pki.key);
    args.extend([OsStr::new("--data-dir"), data.as_os_str()]);
    args.extend(["--rate", "0"].map(OsStr::new));
    args.extend(extra.iter().map(OsStr::new));
    ServerProcess::start(&args)
}

/// Sends a line and waits for it to come back.
fn chats(client: &mut TestClient, text: &str) {
    client.send(text);
    let echo = format!("chat {} {text}", client.nick);
    client.recv_until(|line| line == echo);
}

/// Joins `room` and returns what the room showed of its past (the topic
/// notice and history lines).
fn join_and_read_past(client: &mut TestClient, room: &str) -> Vec<String> {
    client.send(&format!("/join {room}"));
    client.recv_until(|line| line.starts_with("notice you are in "));
    read_past(client)
}

/// The topic notice and history lines that come before the echo of a
/// marker line said now: what a room showed of its past.
fn read_past(client: &mut TestClient) -> Vec<String> {
    let marker = "nothing more of the past";
    client.send(marker);
    let echo = format!("chat {} {marker}", client.nick);
    let mut past = Vec::new();
    loop {
        let line = client.recv();
        if line == echo {
            return past;
        }
        if line.starts_with("history ") || line.starts_with("notice topic of ") {
            past.push(line);
        }
    }
}

#[test]
fn a_restart_gives_back_each_rooms_history_and_topic() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let server = kept(&pki, &data, &[]);
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    alice.send("/join #Tea");
    alice.recv_until(|line| line.starts_with("notice you are in #Tea"));
    alice.send("/topic green leaves");
    alice.recv_until(|line| line.ends_with("set the topic of #Tea: green leaves"));
    chats(&mut alice, "first");
    chats(&mut alice, "second");
    // A room that keeps something outlives its last member; one that
    // keeps nothing does not.
    alice.send("/join #nothing");
    alice.recv_until(|line| line.starts_with("notice you are in #nothing"));
    alice.send("/join #lobby");
    alice.recv_until(|line| line.starts_with("notice you are in #lobby"));
    alice.send("/rooms");
    let rooms = alice.recv_until(|line| line.starts_with("notice rooms"));
    assert!(rooms.contains("#Tea (0)"), "{rooms}");
    assert!(!rooms.contains("#nothing"), "{rooms}");
    let said_by = alice.nick.clone();
    drop(alice);
    server.stop();

    let server = kept(&pki, &data, &[]);
    let mut bob = TestClient::connect(server.addr, &pki.ca);
    let past = join_and_read_past(&mut bob, "#tea");
    assert_eq!(
        past,
        [
            "notice topic of #Tea: green leaves".to_string(),
            format!("history chat {said_by} first"),
            format!("history chat {said_by} second"),
        ]
    );
    drop(bob);
    server.stop();
    assert!(data.join("chat.db").is_file());
}

#[test]
fn a_room_that_kept_only_its_rules_is_not_listed_after_a_restart() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let server = kept(&pki, &data, &[]);
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    alice.send("/join #Quiet");
    alice.recv_until(|line| line.starts_with("notice you are in #Quiet"));
    alice.send("/mode +i");
    alice.recv_until(|line| line.contains("invite-only"));
    alice.send("/join #lobby");
    alice.recv_until(|line| line.starts_with("notice you are in #lobby"));
    drop(alice);
    server.stop();

    let server = kept(&pki, &data, &[]);
    let mut bob = TestClient::connect(server.addr, &pki.ca);
    bob.send("/rooms");
    let rooms = bob.recv_until(|line| line.starts_with("notice rooms"));
    assert!(!rooms.to_lowercase().contains("#quiet"), "{rooms}");
    drop(bob);
    server.stop();
}

#[test]
fn kill_9_during_a_steady_chat_loses_at_most_the_last_moment() {
    /// One line every 10 ms, each sent after the last one's echo: a busy
    /// chat, not a burst (the 200 lines before the kill are fewer than
    /// make the feed nudge the writer, so its gathering pause is what
    /// bounds the loss), for 3 s.
    const PACE: Duration = Duration::from_millis(10);
    const LINES: u32 = 300;
    /// The kill comes in the middle of it.
    const KILL_AFTER: Duration = Duration::from_secs(2);
    let pki = Pki::new();
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let history = LINES.to_string();
    let mut server = kept(&pki, &data, &["--history", &history]);
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    alice.send("/join #steady");
    alice.recv_until(|line| line.starts_with("notice you are in #steady"));
    let start = Instant::now();
    let mut echoed_at = Vec::new();
    for n in 0..LINES {
        // Pacing, not synchronisation: each line still waits for its echo.
        let due = start + PACE * n;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if start.elapsed() >= KILL_AFTER {
            break;
        }
        chats(&mut alice, &format!("line-{n:05}"));
        echoed_at.push(Instant::now());
    }
    let killed_at = server.signal("-KILL");
    server.wait_for_exit();
    drop(alice);

    // The lock died with the process: a new server takes the directory.
    let server = kept(&pki, &data, &["--history", &history]);
    let mut bob = TestClient::connect(server.addr, &pki.ca);
    let past = join_and_read_past(&mut bob, "#steady");
    drop(bob);
    server.stop();
    let kept: Vec<usize> = past
        .iter()
        .map(|line| {
            let (_, n) = line.rsplit_once("line-").expect("a line of the chat");
            n.parse().unwrap()
        })
        .collect();
    // In order, none missing: what is lost is only ever the end.
    assert_eq!(kept, (0..kept.len()).collect::<Vec<_>>());
    assert!(
        echoed_at.len() > LINES as usize / 2,
        "only {} lines were said before the kill",
        echoed_at.len()
    );
    let lost: Vec<Duration> = echoed_at[kept.len().min(echoed_at.len())..]
        .iter()
        .map(|&echoed| killed_at - echoed)
        .collect();
    eprintln!(
        "kill -9: {} lines kept, {} of the {} echoed before the kill lost{}",
        kept.len(),
        lost.len(),
        echoed_at.len(),
        lost.first().map_or(String::new(), |oldest| format!(
            ", the oldest echoed {oldest:?} before it"
        ))
    );
    assert!(
        !kept.is_empty(),
        "nothing was kept of {} lines",
        echoed_at.len()
    );
    assert!(
        lost.iter().all(|&before| before < KILL_WINDOW),
        "lines echoed more than {KILL_WINDOW:?} before the kill were lost: {} of them, \
         the oldest {:?} before it",
        lost.iter().filter(|&&before| before >= KILL_WINDOW).count(),
        lost.first()
    );
}

#[test]
fn data_directory_flags_that_make_no_sense_are_refused() {
    for (args, says) in [
        (&["--data-dir", "x", "--no-data-dir"][..], "give one, once"),
        (
            &["--no-data-dir", "--keep-days", "3"][..],
            "not --no-data-dir",
        ),
        (&["--classic", "--data-dir", "x"][..], "not for --classic"),
        #[cfg(feature = "redis")]
        (
            &["--redis", "redis://127.0.0.1:1", "--keep-bytes", "1M"][..],
            "Redis keeps the rooms",
        ),
    ] {
        let output = run(Command::new(&SERVER).args(args), "");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn an_in_process_server_counts_what_it_wrote_and_gives_it_back() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let server = TestServer::start_kept(&pki, test_limits(), &data);
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    alice.send("/topic the lobby's own");
    alice.recv_until(|line| line.ends_with("set the topic of #lobby: the lobby's own"));
    chats(&mut alice, "one");
    chats(&mut alice, "two");
    let counts = server.store_counts().expect("a store");
    assert!(
        wait_until(|| counts.written.load(Ordering::Relaxed) == 3),
        "written: {counts:?}"
    );
    assert_eq!(counts.queued.load(Ordering::Relaxed), 0);
    assert_eq!(counts.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(counts.failed.load(Ordering::Relaxed), 0);
    let said_by = alice.nick.clone();
    drop(alice);
    server.stop();

    let server = TestServer::start_kept(&pki, test_limits(), &data);
    let mut bob = TestClient::connect(server.addr, &pki.ca);
    let past = read_past(&mut bob);
    assert_eq!(
        past,
        [
            "notice topic of #lobby: the lobby's own".to_string(),
            format!("history chat {said_by} one"),
            format!("history chat {said_by} two"),
        ]
    );
    drop(bob);
    server.stop();
}

#[test]
fn the_retention_flags_bound_what_comes_back() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let flags = ["--history", "3", "--keep-bytes", "1K"];
    let server = kept(&pki, &data, &flags);
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    for n in 1..=5 {
        chats(&mut alice, &format!("short {n}"));
    }
    let said_by = alice.nick.clone();
    drop(alice);
    server.stop();

    // The last three lines: --history.
    let server = kept(&pki, &data, &flags);
    let mut bob = TestClient::connect(server.addr, &pki.ca);
    let past = read_past(&mut bob);
    let expected: Vec<String> = (3..=5)
        .map(|n| format!("history chat {said_by} short {n}"))
        .collect();
    assert_eq!(past[..3], expected);
    // Two lines of 600 bytes are more than 1 KiB: only the last is kept.
    let long = |n: u8| format!("{n}{}", "z".repeat(599));
    chats(&mut bob, &long(1));
    chats(&mut bob, &long(2));
    let said_by = bob.nick.clone();
    drop(bob);
    server.stop();

    let server = kept(&pki, &data, &flags);
    let mut carol = TestClient::connect(server.addr, &pki.ca);
    let past = read_past(&mut carol);
    assert_eq!(past, [format!("history chat {said_by} {}", long(2))]);
    drop(carol);
    server.stop();
}

#[test]
fn help_documents_the_data_directory_flags() {
    let output = run(Command::new(&SERVER).arg("--help"), "");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in ["--data-dir", "--no-data-dir", "--keep-days", "--keep-bytes"] {
        assert!(help.contains(flag), "chat-server --help lacks {flag}");
    }
}

#[test]
fn a_ban_and_the_rooms_operator_survive_a_restart_with_its_history() {
    let pki = Pki::new();
    let alice = pki.client_identity("alice", ClientFlaw::None);
    let troll = pki.client_identity("troll", ClientFlaw::None);
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let flags = ["--client-ca", pki.signer.to_str().unwrap(), "--guests"];
    let connect = |server: &ServerProcess, who| {
        let mut client = TestClient::connect_as(server.addr, &pki.ca, who);
        client.read_greeting();
        client
    };
    let enter = |client: &mut TestClient, room: &str| {
        client.send(&format!("/join {room}"));
        client.recv_until(|line| line.starts_with(&format!("notice you are in {room} (")))
    };

    let server = kept(&pki, &data, &flags);
    let mut op = connect(&server, &alice);
    let mut bad = connect(&server, &troll);
    enter(&mut op, "#den");
    enter(&mut bad, "#den");
    chats(&mut op, "welcome to the den");
    chats(&mut bad, "buy cheap watches");
    op.send("/ban troll 1h trolling");
    op.recv_until(|line| line == "notice alice banned troll from #den (1h left): trolling");
    bad.recv_until(|line| line.starts_with("notice troll was sent from #den to the lobby"));
    drop((op, bad));
    server.stop();

    let server = kept(&pki, &data, &flags);
    // Refused with the reason and the time left, as before the restart.
    let mut bad = connect(&server, &troll);
    bad.send("/join #den");
    let refused = bad.recv_until(|line| line.starts_with("error "));
    assert!(
        refused.starts_with("error you are banned from #den by alice (")
            && refused.ends_with(" left): trolling"),
        "{refused}"
    );
    // The room is still alice's: whoever comes into it first is not its
    // operator.
    let mut visitor = TestClient::connect(server.addr, &pki.ca);
    enter(&mut visitor, "#den");
    visitor.send("/kick troll");
    assert_eq!(
        visitor.recv_until(|line| line.starts_with("error ")),
        "error you are not an operator of #den: /bans lists who is"
    );
    // Alice is shown the room's past, and still moderates it.
    let mut op = connect(&server, &alice);
    let past = join_and_read_past(&mut op, "#den");
    assert_eq!(
        past,
        [
            "history chat alice welcome to the den",
            "history chat troll buy cheap watches",
        ]
    );
    op.send("/bans");
    let key = Fingerprint::of_certificate_file(&alice.cert).unwrap();
    assert_eq!(
        op.recv_until(|line| line.starts_with("notice operators of #den")),
        format!("notice operators of #den: alice ({key})")
    );
    op.send("/unban troll");
    op.recv_until(|line| line == "notice alice lifted the ban on troll in #den");
    enter(&mut bad, "#den");
    drop((op, visitor, bad));
    server.stop();
}

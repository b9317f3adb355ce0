//! `chat-server --metrics`: a scrape over loopback is valid Prometheus text
//! (`promtool check metrics` says so), and its figures move as a scripted
//! session happens: a connection, a line, a flood, a client cut, a failed
//! handshake, a client that leaves.

use secure_chat_test_support as support;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;

use support::{bad_record, cert_args, run, tls_connect, wait_until, Pki, ServerProcess, TIMEOUT};
use support::{test_limits, ClientFlaw, Incoming, TestClient};

use secure_chat::metrics::Registry;
use secure_chat::server::Server;
use secure_chat::tls::{self, Fingerprint};

/// The samples of one scrape, by series (`name{labels}`).
struct Scrape {
    text: String,
    samples: HashMap<String, f64>,
}

impl Scrape {
    /// One series' value; fails the test if the scrape lacks it.
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in\n{}", self.text))
    }
}

/// `GET /metrics` over loopback, within [`TIMEOUT`]; fails the test unless
/// the answer is a 200 of the text format.
fn scrape(addr: SocketAddr) -> Scrape {
    let reply = support::metrics_text(addr);
    let (head, text) = reply.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    samples_of(text)
}

/// The samples of a scrape's text.
fn samples_of(text: &str) -> Scrape {
    let samples = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect();
    Scrape {
        text: text.to_string(),
        samples,
    }
}

/// Scrapes until `series` satisfies `wanted`, for at most [`TIMEOUT`];
/// returns that scrape.
fn wait_for(addr: SocketAddr, series: &str, wanted: impl Fn(f64) -> bool) -> Scrape {
    let mut last = None;
    let moved = wait_until(|| {
        let now = scrape(addr);
        let done = wanted(now.get(series));
        last = Some(now);
        done
    });
    let last = last.unwrap();
    assert!(moved, "{series} did not move as expected:\n{}", last.text);
    last
}

/// `promtool check metrics` on a scrape's text: no error, no lint.
fn promtool_accepts(scrape: &Scrape) {
    let output = run(
        Command::new("promtool").args(["check", "metrics"]),
        &scrape.text,
    );
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool: {}{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        scrape.text
    );
}

/// The metrics address the server's log gave.
fn metrics_addr(server: &ServerProcess) -> SocketAddr {
    let line = server
        .seen
        .iter()
        .find(|line| line.contains("metrics on http://"))
        .unwrap_or_else(|| panic!("no metrics address in {:#?}", server.seen));
    let addr = line.rsplit_once("http://").unwrap().1;
    let addr = addr.trim_end_matches("/metrics").parse().unwrap();
    // The endpoint answers from the moment it is logged, but the server's
    // own families join it when `Server::run` has made what they count,
    // a moment later.
    assert!(
        wait_until(|| scrape(addr).samples.contains_key(CONNECTIONS)),
        "the server's figures never joined the endpoint"
    );
    addr
}

const CONNECTIONS: &str = "chat_server_connections";
const HANDSHAKES_OK: &str = "chat_server_handshakes_total{outcome=\"ok\"}";
const LINES_IN: &str = "chat_server_lines_in_total";
const ROOM_LINES: &str = "chat_server_room_lines_total";
const DELIVERIES: &str = "chat_server_deliveries_total";

#[test]
fn the_figures_pass_promtool_and_move_as_a_session_happens() {
    let pki = Pki::new();
    let mut args = cert_args(&pki.cert, &pki.key);
    // One line a second, one at once: a client's third line in a row
    // surely waits.
    args.extend(["--metrics", "127.0.0.1:0", "--rate", "1", "--burst", "1"].map(OsStr::new));
    let server = ServerProcess::start(&args);
    let addr = metrics_addr(&server);

    let start = scrape(addr);
    promtool_accepts(&start);
    assert_eq!(start.get(CONNECTIONS), 0.0);
    assert_eq!(start.get(HANDSHAKES_OK), 0.0);
    assert!(start.get("chat_server_threads") >= 3.0, "{}", start.text);

    // A connection.
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    wait_for(addr, HANDSHAKES_OK, |n| n == 1.0);
    assert_eq!(scrape(addr).get(CONNECTIONS), 1.0);
    assert_eq!(
        scrape(addr).get("chat_server_connections_accepted_total"),
        1.0
    );
    let bob = TestClient::connect(server.addr, &pki.ca);
    alice.recv_until(|line| line.contains(&format!("{} joined", bob.nick)));
    let before = wait_for(addr, CONNECTIONS, |n| n == 2.0);

    // A line: one in, one room line, one delivery for each of the two.
    alice.send("hello");
    let echo = format!("chat {} hello", alice.nick);
    alice.recv_until(|line| line == echo);
    bob.recv_until(|line| line == echo);
    let after = wait_for(addr, DELIVERIES, |n| n >= before.get(DELIVERIES) + 2.0);
    assert_eq!(after.get(DELIVERIES), before.get(DELIVERIES) + 2.0);
    assert_eq!(after.get(LINES_IN), before.get(LINES_IN) + 1.0);
    assert_eq!(after.get(ROOM_LINES), before.get(ROOM_LINES) + 1.0);

    // A flood: the third line in a row waits for its token.
    alice.send("two");
    alice.send("three");
    let three = format!("chat {} three", alice.nick);
    alice.recv_until(|line| line == three);
    let flooded = wait_for(addr, "chat_server_flood_waits_total", |n| n >= 1.0);
    assert!(flooded.get("chat_server_flood_wait_seconds_total") > 0.0);

    // A cut: a record nobody can decrypt ends carol's connection.
    let (_conn, carol) = tls_connect(server.addr, &pki.ca);
    wait_for(addr, HANDSHAKES_OK, |n| n == 3.0);
    (&carol).write_all(&bad_record()).unwrap();
    wait_for(
        addr,
        "chat_server_disconnects_total{reason=\"tls_error\"}",
        |n| n == 1.0,
    );
    wait_for(addr, CONNECTIONS, |n| n == 2.0);

    // A failed handshake: something that is not TLS.
    let mut http = TcpStream::connect(server.addr).unwrap();
    http.set_read_timeout(Some(TIMEOUT)).unwrap();
    http.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    // The server answers with an alert, or nothing, and closes.
    let _ = http.read_to_end(&mut Vec::new());
    let failed = wait_for(
        addr,
        "chat_server_handshake_failures_total{kind=\"not_tls\"}",
        |n| n == 1.0,
    );
    assert_eq!(
        failed.get("chat_server_handshakes_total{outcome=\"failed\"}"),
        1.0
    );

    // A client that leaves properly.
    alice.close();
    // Its last lines, then the server's close.
    while let Incoming::Line(_) = alice.next() {}
    let end = wait_for(
        addr,
        "chat_server_disconnects_total{reason=\"closed\"}",
        |n| n == 1.0,
    );
    promtool_accepts(&end);
    // Counters never went back.
    for (series, value) in &start.samples {
        if series.contains("_total") {
            assert!(end.get(series) >= *value, "{series} went back");
        }
    }
    drop(bob);
    server.stop();
}

#[test]
fn the_help_names_the_flag_and_who_can_read_it() {
    let output = run(Command::new(support::SERVER.path()).arg("--help"), "");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--metrics HOST:PORT"), "{help}");
    assert!(help.contains("plain HTTP"), "{help}");
    assert!(help.contains("authentication"), "{help}");
}

/// The TCP sockets process `pid` listens on: its descriptors that are
/// sockets, looked up among the listening ones in /proc/net/tcp and tcp6.
fn listening_sockets(pid: u32) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .map(|line| {
                    line.split_whitespace()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        // Field 3 is the state (0A: listening), field 9 the inode.
        .filter(|fields| fields.len() > 9 && fields[3] == "0A" && inodes.contains(&fields[9]))
        .count()
}

#[test]
fn without_the_flag_nothing_is_served() {
    let pki = Pki::new();
    let server = ServerProcess::start(&cert_args(&pki.cert, &pki.key));
    assert!(
        !server.seen.iter().any(|line| line.contains("metrics on")),
        "{:#?}",
        server.seen
    );
    // The chat's port, and no other.
    assert_eq!(listening_sockets(server.pid), 1);
    server.stop();
    // What the count would see if the endpoint were there.
    let mut args = cert_args(&pki.cert, &pki.key);
    args.extend(["--metrics", "127.0.0.1:0"].map(OsStr::new));
    let with = ServerProcess::start(&args);
    assert_eq!(listening_sockets(with.pid), 2);
    with.stop();
}

/// A client whose socket takes nothing: it holds up the lines for it, the
/// memory budget fills and the hub pauses, until the client is cut as
/// stalled. And a connection that never starts its handshake times out.
#[test]
fn a_stall_fills_the_budget_and_is_cut_and_a_silent_handshake_times_out() {
    const LINES: usize = 3_000;
    let pki = Pki::new();
    let mut args = cert_args(&pki.cert, &pki.key);
    args.extend(
        [
            "--metrics",
            "127.0.0.1:0",
            "--rate",
            "0",
            "--stall-timeout",
            "1",
            "--memory-budget",
            "1M",
            "--handshake-timeout",
            "1",
        ]
        .map(OsStr::new),
    );
    let server = ServerProcess::start(&args);
    let addr = metrics_addr(&server);

    // A handshake that never comes.
    let mut mute = TcpStream::connect(server.addr).unwrap();
    mute.set_read_timeout(Some(TIMEOUT)).unwrap();
    let _ = mute.read_to_end(&mut Vec::new());
    wait_for(
        addr,
        "chat_server_handshakes_total{outcome=\"timed_out\"}",
        |n| n == 1.0,
    );

    let mut alice = TestClient::connect(server.addr, &pki.ca);
    let stalled = stalled_reader(server.addr, &pki.ca);
    alice.recv_until(|line| line.contains(" joined #lobby"));
    // About 3 MB for a reader that takes a few KiB: 1 MiB of it waits.
    let padding = "x".repeat(1000);
    let sender = std::thread::spawn(move || {
        for n in 0..LINES {
            alice.send(&format!("{n} {padding}"));
        }
        alice
    });
    wait_for(addr, "chat_server_waiting_bytes", |n| n > 0.0);
    wait_for(
        addr,
        "chat_server_disconnects_total{reason=\"stalled\"}",
        |n| n == 1.0,
    );
    // A pause is counted when it ends, which may be just after the cut.
    let paused = wait_for(addr, "chat_server_budget_pauses_total", |n| n >= 1.0);
    assert!(
        paused.get("chat_server_budget_pause_seconds_total") > 0.0,
        "{}",
        paused.text
    );
    let alice = sender.join().unwrap();
    let last = format!("chat {} {} ", alice.nick, LINES - 1);
    alice.recv_until(|line| line.starts_with(&last));
    wait_for(addr, "chat_server_waiting_bytes", |n| n == 0.0);
    drop((alice, stalled));
    server.stop();
}

/// A client in the chat, with a receive buffer of a few KiB, that never
/// reads.
fn stalled_reader(addr: SocketAddr, ca: &std::path::Path) -> (rustls::Connection, TcpStream) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    // Before connecting, so that the window offered is small too.
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&addr.into(), TIMEOUT).unwrap();
    let config = tls::client_config(&tls::Trust::CaFile(ca.to_owned()), None).unwrap();
    let options = support::client_options(addr, ca);
    secure_chat::client::handshake(socket.into(), config, &options)
        .unwrap()
        .into_parts()
}

/// With a data directory, the store's queue and what it wrote.
#[test]
fn the_store_shows_what_it_wrote() {
    let pki = Pki::new();
    let data = support::TempDir::new();
    let mut args = cert_args(&pki.cert, &pki.key);
    args.extend(["--metrics", "127.0.0.1:0", "--data-dir"].map(OsStr::new));
    args.push(data.path().as_os_str());
    let server = ServerProcess::start(&args);
    let addr = metrics_addr(&server);
    let start = scrape(addr);
    assert_eq!(start.get("chat_server_store_queued"), 0.0);
    assert_eq!(start.get("chat_server_store_failed_total"), 0.0);
    promtool_accepts(&start);
    let written = start.get("chat_server_store_written_total");

    let mut alice = TestClient::connect(server.addr, &pki.ca);
    alice.send("kept");
    let echo = format!("chat {} kept", alice.nick);
    alice.recv_until(|line| line == echo);
    wait_for(addr, "chat_server_store_written_total", |n| n > written);
    drop(alice);
    server.stop();
}

/// With `--redis`, the link's figures: up while Redis answers, down once it
/// is gone, and nothing held back for it while nobody speaks.
#[cfg(feature = "redis")]
#[test]
fn the_link_to_redis_shows_up_then_down() {
    let pki = Pki::new();
    let mut redis = support::Redis::start(&[]);
    let url = redis.url();
    let mut args = cert_args(&pki.cert, &pki.key);
    args.extend(["--metrics", "127.0.0.1:0", "--redis", &url].map(OsStr::new));
    let server = ServerProcess::start(&args);
    let addr = metrics_addr(&server);

    let up = wait_for(addr, "chat_server_redis_link_up", |n| n == 1.0);
    assert_eq!(up.get("chat_server_redis_held_back_bytes"), 0.0);
    assert_eq!(up.get("chat_server_redis_reconnects_total"), 0.0);
    assert_eq!(up.get("chat_server_redis_outbox"), 0.0);
    promtool_accepts(&up);

    // A line goes through both queues, and out of them. Alice's arrival
    // in the lobby is a room line too, which this server shows or not
    // depending on whether it had subscribed to the lobby in time (it has
    // nobody else there to show it to): a first line settles that, since
    // the room's order puts the arrival before it.
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    let said = |alice: &mut TestClient, text: &str| {
        alice.send(text);
        let echo = format!("chat {} {text}", alice.nick);
        alice.recv_until(|line| line == echo);
        wait_for(addr, "chat_server_redis_deliveries", |n| n == 0.0)
    };
    let before = said(&mut alice, "first");
    let through = said(&mut alice, "hello");
    assert_eq!(through.get("chat_server_redis_outbox"), 0.0);
    assert_eq!(through.get(ROOM_LINES), before.get(ROOM_LINES) + 1.0);

    redis.stop();
    wait_for(addr, "chat_server_redis_link_up", |n| n == 0.0);
    redis.spawn(&[]);
    let back = wait_for(addr, "chat_server_redis_reconnects_total", |n| n == 1.0);
    assert_eq!(back.get("chat_server_redis_link_up"), 1.0);
    drop(alice);
    server.stop();
}

/// The reasons `chat_server_disconnects_total` gives for clients that
/// leave the chat in the ordinary way of a session: the client's own, the
/// chat's, a shutdown's. (Cuts by the slow-consumer policy have a test of
/// their own above.)
const ENDS: [&str; 9] = [
    "closed",
    "lost",
    "quit",
    "killed",
    "banned",
    "refused",
    "replaced",
    "name_lost",
    "shutdown",
];

/// Who ended a connection, and why, counts: each reason the chat closes a
/// client for moves its own label and no other; a client that closed first
/// is not one the server closed; and a client still there when the server
/// stops is counted as shut out, whatever its connection then did.
#[test]
fn a_close_by_the_server_and_a_shutdown_are_told_apart() {
    let pki = Pki::new();
    let root = pki.client_identity("root", ClientFlaw::None);
    let alice = pki.client_identity("alice", ClientFlaw::None);
    // Certificates asked for, not required: guests beside those who have
    // one, as `--client-ca` with `--guests`.
    let clients = tls::ClientCertificates::Optional(&pki.signer);
    let config = tls::server_config_for(&pki.cert, &pki.key, clients).unwrap();
    let mut server = Server::bind("127.0.0.1:0", config, test_limits()).unwrap();
    let registry = Registry::new();
    server.report_to(Arc::clone(&registry));
    let root_key = Fingerprint::of_certificate_file(&root.cert).unwrap();
    server.operators().replace(vec![root_key]);
    let addr = server.local_addr();
    let stopper = server.stopper();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(server.run());
    });
    let counted = || {
        let scrape = samples_of(&registry.render());
        ENDS.map(|reason| {
            let series = format!("chat_server_disconnects_total{{reason=\"{reason}\"}}");
            (reason, scrape.get(&series))
        })
    };
    // Every reason at once: the one that should have moved, and all those
    // that should not have.
    let settles_at = |wanted: &[(&str, f64)]| {
        let expected = ENDS.map(|reason| {
            let count = wanted.iter().find(|(r, _)| *r == reason);
            (reason, count.map_or(0.0, |&(_, n)| n))
        });
        let reached = wait_until(|| counted() == expected);
        assert!(reached, "wanted {expected:?}, counted {:?}", counted());
    };
    let connect_as = |identity| {
        let mut client = TestClient::connect_as(addr, &pki.ca, identity);
        client.read_greeting();
        client
    };
    let mut root = connect_as(&root);
    let alice_there = connect_as(&alice);

    // The client asks to go: the server says goodbye and closes; bob
    // answers its close_notify, which the server did not wait for.
    let mut bob = TestClient::connect(addr, &pki.ca);
    bob.send("/quit lunch");
    bob.expect_end();
    drop(bob);
    settles_at(&[("quit", 1.0)]);

    // A server operator's /kill.
    let troll = TestClient::connect(addr, &pki.ca);
    root.send(&format!("/kill {} flooding", troll.nick));
    assert_eq!(
        troll.recv_until(|line| line.starts_with("error ")),
        "error you were disconnected by root: flooding"
    );
    assert_eq!(troll.expect_end(), Incoming::Closed);
    drop(troll);
    settles_at(&[("quit", 1.0), ("killed", 1.0)]);

    // Killed, and never answering the close (as a flooder reading one
    // line per token may not, in time): cut after the linger, and still
    // counted as killed, not as one that did not hang up.
    let silent = TestClient::connect(addr, &pki.ca);
    root.send(&format!("/kill {} flooding", silent.nick));
    settles_at(&[("quit", 1.0), ("killed", 2.0)]);
    drop(silent);

    // A server ban disconnects whom it names, then refuses them at the
    // door: two reasons.
    root.send("/serverban alice");
    let told = "error you are banned from this server by root (until lifted)";
    assert_eq!(
        alice_there.recv_until(|line| line.starts_with("error ")),
        told
    );
    assert_eq!(alice_there.expect_end(), Incoming::Closed);
    drop(alice_there);
    settles_at(&[("quit", 1.0), ("killed", 2.0), ("banned", 1.0)]);
    let alice_again = TestClient::connect_as(addr, &pki.ca, &alice);
    assert_eq!(alice_again.recv(), told);
    assert_eq!(alice_again.expect_end(), Incoming::Closed);
    drop(alice_again);
    let so_far = [
        ("quit", 1.0),
        ("killed", 2.0),
        ("banned", 1.0),
        ("refused", 1.0),
    ];
    settles_at(&so_far);

    // A new connection reclaims its nick: the old one, a ghost, is closed.
    let mut ghost = TestClient::connect(addr, &pki.ca);
    ghost.send("/nick carol");
    assert_eq!(ghost.recv(), "notice you are now carol");
    ghost.send("/token");
    let token = ghost.recv();
    let secret = token.strip_prefix("token carol ").expect(&token).to_owned();
    let mut carol = TestClient::connect(addr, &pki.ca);
    carol.send(&format!("/reclaim carol {secret}"));
    assert_eq!(carol.recv(), "notice you are carol again");
    assert_eq!(ghost.expect_end(), Incoming::Closed);
    drop(ghost);
    let so_far = [so_far.as_slice(), &[("replaced", 1.0)]].concat();
    settles_at(&so_far);

    // A client that closes first is not one the server closed.
    let mut leaving = TestClient::connect(addr, &pki.ca);
    leaving.close();
    assert_eq!(leaving.expect_end(), Incoming::Closed);
    drop(leaving);
    let so_far = [so_far.as_slice(), &[("closed", 1.0)]].concat();
    settles_at(&so_far);

    // Root and carol are still there.
    stopper.stop();
    let result = finished.recv_timeout(TIMEOUT).expect("the server stopped");
    result.expect("the server ran well");
    settles_at(&[so_far.as_slice(), &[("shutdown", 2.0)]].concat());
    drop((root, carol));
}

/// The clients in the chat, beside `--max-clients`, and each connection
/// turned away, by why: the figures a "server full" alert needs.
#[test]
fn places_taken_and_connections_turned_away_are_shown() {
    let pki = Pki::new();
    let mut args = cert_args(&pki.cert, &pki.key);
    args.extend(["--metrics", "127.0.0.1:0", "--max-clients", "1"].map(OsStr::new));
    let server = ServerProcess::start(&args);
    let addr = metrics_addr(&server);
    const FULL: &str = "chat_server_refused_total{reason=\"server_full\"}";
    const CAP: &str = "chat_server_refused_total{reason=\"connection_cap\"}";
    let start = scrape(addr);
    assert_eq!(start.get("chat_server_clients"), 0.0);
    assert_eq!(start.get(FULL), 0.0);
    promtool_accepts(&start);

    let alice = TestClient::connect(server.addr, &pki.ca);
    assert_eq!(scrape(addr).get("chat_server_clients"), 1.0);
    // The second is told the server is full, and counted so.
    let bob = TestClient::connect_quietly(server.addr, &pki.ca);
    assert!(bob.recv().contains("server full"));
    bob.expect_end();
    let full = wait_for(addr, FULL, |n| n == 1.0);
    assert_eq!(full.get("chat_server_clients"), 1.0);
    assert_eq!(full.get("chat_server_max_clients"), 1.0);
    drop(bob);
    wait_for(addr, CONNECTIONS, |n| n == 1.0);

    // The connection cap is twice --max-clients: alice and one more in
    // its handshake; the next is closed at once.
    let _waiting = TcpStream::connect(server.addr).unwrap();
    wait_for(addr, CONNECTIONS, |n| n == 2.0);
    let mut past = TcpStream::connect(server.addr).unwrap();
    past.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut rest = Vec::new();
    assert_eq!(past.read_to_end(&mut rest).unwrap(), 0);
    let capped = wait_for(addr, CAP, |n| n == 1.0);
    assert_eq!(capped.get(FULL), 1.0);
    drop(alice);
    server.stop();
}

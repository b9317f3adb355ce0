//! The chat itself: relaying, the original app's replies, ordering, and
//! clients that are slow or quiet.

use secure_chat_test_support as support;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use secure_chat::protocol::{BYE_REPLY, HI_REPLY, WELCOME};
use secure_chat::server::Limits;
use support::{
    chat_of, rss_kib, test_limits, Incoming, Pki, SilentClient, TestClient, TestServer, TIMEOUT,
};

#[test]
fn every_line_reaches_everyone_intact() {
    let (_pki, server, mut clients) = chat_of(3);

    let texts = ["héllo 世界 🙂", "plain ascii", "tabs\tstay"];
    for (sender, text) in texts.iter().enumerate() {
        clients[sender].send(text);
        let expected = format!("chat {} {text}", clients[sender].nick);
        for client in &clients {
            assert_eq!(client.recv(), expected, "as seen by {}", client.nick);
        }
    }
    for client in &mut clients {
        assert!(client.nothing_pending());
    }
    server.stop();
}

#[test]
fn welcome_is_the_first_line() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let client = TestClient::connect_quietly(server.addr, &pki.ca);
    assert_eq!(client.recv(), format!("notice {WELCOME}"));
    server.stop();
}

#[test]
fn hi_is_answered_and_still_relayed() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    let bob = TestClient::connect(server.addr, &pki.ca);
    alice.recv(); // bob joined

    alice.send("hi");
    assert_eq!(alice.recv(), format!("chat {} hi", alice.nick));
    assert_eq!(alice.recv(), format!("notice {HI_REPLY}"));
    assert_eq!(bob.recv(), format!("chat {} hi", alice.nick));
    // The reply is for the sender only: bob's next line is alice's next one.
    alice.send("after");
    assert_eq!(bob.recv(), format!("chat {} after", alice.nick));
    server.stop();
}

#[test]
fn bye_is_answered_then_the_server_closes_cleanly() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    let bob = TestClient::connect(server.addr, &pki.ca);
    alice.recv(); // bob joined

    alice.send("bye");
    assert_eq!(alice.recv(), format!("notice {BYE_REPLY}"));
    assert_eq!(alice.next(), Incoming::Closed, "expected close_notify");
    assert_eq!(bob.recv(), format!("notice {} quit", alice.nick));
    server.stop();
}

#[test]
fn a_client_that_closes_is_announced_and_its_last_line_delivered() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    let bob = TestClient::connect(server.addr, &pki.ca);
    alice.recv(); // bob joined

    alice.send("last words");
    alice.close();
    assert_eq!(alice.recv(), format!("chat {} last words", alice.nick));
    assert_eq!(alice.next(), Incoming::Closed);
    assert_eq!(bob.recv(), format!("chat {} last words", alice.nick));
    assert_eq!(bob.recv(), format!("notice {} quit", alice.nick));
    server.stop();
}

#[test]
fn unknown_commands_and_bad_lines_get_an_error_reply() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    alice.send("/frobnicate now");
    assert!(alice
        .recv()
        .starts_with("error unknown command /frobnicate"));
    alice.send_raw(b"bad \xff bytes\n");
    assert!(alice.recv().starts_with("error line is not valid UTF-8"));
    alice.send("//slash");
    assert_eq!(alice.recv(), format!("chat {} /slash", alice.nick));
    server.stop();
}

#[test]
fn many_senders_every_line_exactly_once_in_order() {
    const SENDERS: usize = 5;
    const LINES: usize = 1000;
    let (_pki, server, mut clients) = chat_of(SENDERS);
    let nicks: Vec<String> = clients.iter().map(|c| c.nick.clone()).collect();

    // Everyone sends at once, each from its own thread, while every
    // client's reader thread collects what arrives.
    thread::scope(|scope| {
        for client in &mut clients {
            scope.spawn(move || {
                for n in 0..LINES {
                    client.send(&format!("line {n}"));
                }
            });
        }
    });

    for client in &clients {
        let mut next_expected: HashMap<&str, usize> = HashMap::new();
        for _ in 0..SENDERS * LINES {
            let line = client.recv();
            let rest = line.strip_prefix("chat ").expect("a chat line");
            let (from, text) = rest.split_once(' ').unwrap();
            let n: usize = text.strip_prefix("line ").unwrap().parse().unwrap();
            let from = nicks
                .iter()
                .find(|nick| *nick == from)
                .expect("known sender");
            let expected = next_expected.entry(from.as_str()).or_insert(0);
            assert_eq!(
                n, *expected,
                "{} got {from}'s lines out of order",
                client.nick
            );
            *expected += 1;
        }
        assert!(next_expected.values().all(|&count| count == LINES));
    }
    server.stop();
}

#[test]
fn a_client_that_never_reads_is_cut_off_and_hurts_nobody() {
    const LINES: usize = 20_000;
    /// The talker keeps at most this many of its lines unacknowledged, as a
    /// polite client does; only the silent client falls behind.
    const WINDOW: usize = 64;
    let pki = Pki::new();
    // A cap on what may wait for one client small enough that the silent
    // client is found out early, large enough for a healthy client's
    // window (64 lines of 1 KiB) four times over.
    let limits = Limits {
        max_pending: 4 * WINDOW * 1024,
        ..test_limits()
    };
    let server = TestServer::start_with(&pki, limits);
    let mut talker = TestClient::connect(server.addr, &pki.ca);
    let listener = TestClient::connect(server.addr, &pki.ca);
    talker.recv(); // listener joined
    let mut silent = SilentClient::connect(server.addr, &pki.ca);
    let rss_before = rss_kib();

    // 20,000 lines of 1 KiB: 20 MiB, far more than the socket buffers and
    // queue of the silent client can hold.
    let padding = "x".repeat(1000);
    // The listener acknowledges each line it sees; the talker keeps at most
    // a window ahead of it and of its own echoes, so only the silent client
    // ever falls further behind.
    let (acknowledge, acknowledged) = crossbeam_channel::unbounded();
    thread::scope(|scope| {
        scope.spawn(|| {
            let mut echoed = 0;
            for n in 0..LINES {
                if n >= WINDOW {
                    acknowledged
                        .recv_timeout(TIMEOUT)
                        .expect("the listener fell silent");
                }
                talker.send(&format!("{n} {padding}"));
                while n + 1 - echoed > WINDOW {
                    if talker.recv().starts_with("chat ") {
                        echoed += 1;
                    }
                }
            }
            while echoed < LINES {
                if talker.recv().starts_with("chat ") {
                    echoed += 1;
                }
            }
        });
        let mut seen = 0;
        while seen < LINES {
            let line = listener.recv();
            if line.starts_with("chat ") {
                let n: usize = line.split(' ').nth(2).unwrap().parse().unwrap();
                assert_eq!(n, seen, "the listener missed a line");
                seen += 1;
                // The talker may have stopped waiting for the last ones.
                let _ = acknowledge.send(());
            }
        }
    });
    let growth_kib = rss_kib().saturating_sub(rss_before);

    assert!(
        silent.was_disconnected(),
        "the silent client is still connected"
    );
    // Had the server kept everything for the silent client, it would have
    // grown by the 20 MiB sent.
    assert!(
        growth_kib < 12 * 1024,
        "server memory grew by {growth_kib} KiB"
    );
    server.stop();
}

#[test]
fn an_idle_client_gets_messages_without_delay() {
    const ROUNDS: usize = 20;
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let mut sender = TestClient::connect(server.addr, &pki.ca);
    let idle = TestClient::connect(server.addr, &pki.ca);
    sender.recv(); // idle joined

    let mut delays = Vec::new();
    for n in 0..ROUNDS {
        let start = Instant::now();
        sender.send(&format!("ping {n}"));
        assert_eq!(idle.recv(), format!("chat {} ping {n}", sender.nick));
        delays.push(start.elapsed());
        sender.recv();
    }
    delays.sort();
    let median = delays[ROUNDS / 2];
    // A loopback round trip takes well under a millisecond. A reader that
    // polled, or waited on a timeout, would put its interval (tens of
    // milliseconds at least) into the median; noise on a busy machine
    // spoils single rounds, not half of them.
    assert!(
        median < Duration::from_millis(20),
        "median delivery took {median:?}"
    );
    server.stop();
}

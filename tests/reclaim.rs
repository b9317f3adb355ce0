//! Coming back after a dropped connection, over real TLS connections: the
//! old connection is still open (the server does not know it is dead) when
//! the new one takes its nick back.

use secure_chat_test_support as support;

use support::{Incoming, Pki, TestClient, TestServer};

/// The secret of a `token NICK SECRET` line.
fn secret_of(line: &str, nick: &str) -> String {
    let prefix = format!("token {nick} ");
    line.strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected a token for {nick}, got {line:?}"))
        .to_string()
}

#[test]
fn a_new_connection_takes_its_nick_and_room_back_from_the_ghost() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let mut ghost = TestClient::connect(server.addr, &pki.ca);
    ghost.send("/nick alice");
    assert_eq!(ghost.recv(), "notice you are now alice");
    ghost.send("/token");
    let secret = secret_of(&ghost.recv(), "alice");
    ghost.send("/join #rust");
    assert_eq!(ghost.recv(), "notice you are in #rust (1 person here)");
    let mut bob = TestClient::connect(server.addr, &pki.ca);
    bob.send("/join #rust");
    bob.recv_until(|line| line.starts_with("notice you are in #rust"));
    ghost.recv_until(|line| line.contains("joined #rust"));

    // The ghost's connection is still open; a new one comes.
    let mut back = TestClient::connect(server.addr, &pki.ca);
    back.send(&format!("/reclaim alice {secret}"));
    assert_eq!(back.recv(), "notice you are alice again");
    assert_eq!(back.recv(), "notice you are in #rust (2 people here)");
    let next = secret_of(&back.recv(), "alice");
    assert_ne!(next, secret);
    assert_eq!(ghost.expect_end(), Incoming::Closed, "the ghost is closed");

    // For bob, alice never left: the next line he gets is his own answer.
    bob.send("/who");
    assert_eq!(
        bob.recv(),
        format!("notice in #rust (2): alice, {}", bob.nick)
    );
    back.send("back again");
    assert_eq!(bob.recv(), "chat alice back again");
    assert_eq!(back.recv(), "chat alice back again");

    // The old secret worked once; nobody else takes the name with it.
    let mut thief = TestClient::connect(server.addr, &pki.ca);
    thief.send(&format!("/reclaim alice {secret}"));
    assert_eq!(
        thief.recv(),
        "error cannot reclaim alice: no connection of yours holds it with that secret \
         (if it is free, take it with /nick alice)"
    );
    server.stop();
}

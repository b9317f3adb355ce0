//! Connections that end badly leave nothing behind: descriptors and
//! threads return to where they were.
//!
//! One test only: it counts the whole process's descriptors and threads,
//! which tests running beside it in the same process would disturb.

use secure_chat_test_support as support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use secure_chat::server::Limits;
use support::{
    half_client_hello, has_thread_named, open_fds, test_limits, thread_count, wait_until, Pki,
    TestClient, TestServer, TIMEOUT,
};

#[test]
fn resets_and_abandoned_handshakes_leave_no_descriptors_or_threads() {
    const RESETS: usize = 1_000;
    const ABANDONED: usize = 200;
    /// Connections between two checks; well under the listen backlog (128).
    const BATCH: usize = 100;
    let pki = Pki::new();
    // No history: each checking client's greeting ends at the lobby.
    let limits = Limits {
        history: 0,
        ..test_limits()
    };
    let server = TestServer::start_with(&pki, limits);
    // Idle: the accept loop's thread exists once `start` returns; the hub's
    // is started by it.
    assert!(wait_until(|| has_thread_named("hub")), "no hub thread");
    let (fds, threads) = (open_fds(), thread_count());

    let hello = half_client_hello(&pki.ca);
    let mut connections = 0;
    for batch in 0..(RESETS + ABANDONED) / BATCH {
        for _ in 0..BATCH {
            let mut socket = TcpStream::connect_timeout(&server.addr, TIMEOUT).unwrap();
            if batch * BATCH < RESETS {
                // Closing with a zero linger sends a reset, not a FIN.
                socket2::SockRef::from(&socket)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            } else {
                socket.write_all(&hello).unwrap();
            }
        }
        connections += BATCH;
        // Guest nicks are numbered by connection, in the order accepted:
        // this one's proves the server took every connection before it
        // (and keeps the listen backlog from overflowing).
        connections += 1;
        let mut client = TestClient::connect(server.addr, &pki.ca);
        assert_eq!(client.nick, format!("guest{connections}"));
        client.send("still serving");
        // The checking client of the batch before may be seen leaving first.
        assert_eq!(
            client.recv_non_notice(),
            format!("chat {} still serving", client.nick)
        );
    }

    let back = wait_until(|| {
        server.open_connections() == 0 && open_fds() == fds && thread_count() == threads
    });
    assert!(
        back,
        "after {RESETS} resets and {ABANDONED} abandoned handshakes: \
         {} connections open, {} descriptors (was {fds}), {} threads (was {threads})",
        server.open_connections(),
        open_fds(),
        thread_count()
    );
    server.stop();
}

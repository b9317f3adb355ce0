//! Helpers shared by secure-chat's integration tests: throwaway PKIs made
//! with rcgen ([`pki`]), an in-process server on `127.0.0.1:0`
//! ([`server`]), a scriptable TLS chat client ([`client`]), readings of
//! this process from /proc ([`procfs`]), the two binaries run as child
//! processes ([`process`]) and, with the `redis` feature, a Redis of a
//! test's own (`redis_server`) or a Redis Cluster of six (`redis_cluster`).
//!
//! Every wait here has a deadline ([`TIMEOUT`]); a test that would hang
//! fails instead. Everything is re-exported at the top, so a test file
//! imports what it needs from one place.

#![warn(missing_docs)]

pub mod client;
pub mod pki;
pub mod process;
pub mod procfs;
#[cfg(feature = "redis")]
pub mod redis_cluster;
#[cfg(feature = "redis")]
pub mod redis_server;
pub mod server;

use std::thread;
use std::time::{Duration, Instant};

pub use client::{
    bad_record, client_options, half_client_hello, read_plaintext_until, tls_connect,
    tls_connect_as, typeless_record, Incoming, SilentClient, TestClient,
};
pub use pki::{ClientFlaw, Flaw, Pki, TempDir};
pub use process::{cert_args, finish, kill, lines_of, run, Binary, ServerProcess, CLIENT, SERVER};
pub use procfs::{has_thread_named, open_fds, rss_kib, thread_count, thread_names};
#[cfg(feature = "redis")]
pub use redis_cluster::{cpu_ns, slot, Member, RedisCluster, SHARD_SLOTS, SLOTS};
#[cfg(feature = "redis")]
pub use redis_server::{frame, free_port, quick_link, unframe, Redis};
pub use server::{chat_of, chat_with, test_limits, TestServer};

/// One `GET /metrics` to a server's metrics endpoint at `addr`, over
/// loopback, within [`TIMEOUT`]: the whole answer, head and all.
pub fn metrics_text(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket.set_write_timeout(Some(TIMEOUT)).unwrap();
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    socket.read_to_string(&mut reply).unwrap();
    reply
}

/// The longest any single wait in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Checks `condition` every few milliseconds until it holds; false if it
/// still does not after [`TIMEOUT`]. For conditions nothing can block on,
/// such as a counter going down.
pub fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

//! A chat server in a thread of the test process, and the room of
//! clients most chat tests start from.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::Receiver;
use secure_chat::server::{Gauges, Limits, Server, Stopper};
use secure_chat::tls;

use crate::client::TestClient;
use crate::pki::Pki;
use crate::TIMEOUT;

/// The default limits without flood control, which would make every test
/// that sends more than a handful of lines slow. The flood control tests
/// turn it on.
pub fn test_limits() -> Limits {
    Limits {
        rate: None,
        ..Limits::default()
    }
}

/// A server running in a thread of the test process.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stopper: Stopper,
    /// Read by [`TestServer::open_connections`].
    gauges: Gauges,
    finished: Receiver<Result<(), secure_chat::Error>>,
    stopped: bool,
    /// With a store ([`TestServer::start_kept`]): its queue and losses.
    store: Option<Arc<secure_chat::store::StoreCounts>>,
}

impl TestServer {
    /// A server with [`test_limits`] and certificates from `pki`.
    pub fn start(pki: &Pki) -> TestServer {
        TestServer::start_with(pki, test_limits())
    }

    /// A server with `limits` and certificates from `pki`.
    pub fn start_with(pki: &Pki, limits: Limits) -> TestServer {
        TestServer::start_config(
            tls::server_config(&pki.cert, &pki.key, None).unwrap(),
            limits,
        )
    }

    /// A server that requires client certificates signed by `pki`'s CA.
    pub fn start_mutual(pki: &Pki) -> TestServer {
        let config = tls::server_config(&pki.cert, &pki.key, Some(&pki.signer)).unwrap();
        TestServer::start_config(config, test_limits())
    }

    /// A server with this TLS configuration and `limits`.
    pub fn start_config(config: Arc<rustls::ServerConfig>, limits: Limits) -> TestServer {
        // Bound before the thread starts: clients can connect at once.
        let server = Server::bind("127.0.0.1:0", config, limits).unwrap();
        TestServer::run(server)
    }

    /// A server that keeps its rooms in the data directory `dir` (the
    /// others keep nothing): with what it kept there, if anything.
    pub fn start_kept(pki: &Pki, limits: Limits, dir: &std::path::Path) -> TestServer {
        let config = tls::server_config(&pki.cert, &pki.key, None).unwrap();
        let mut server = Server::bind("127.0.0.1:0", config, limits).unwrap();
        let retention = secure_chat::store::Retention {
            lines: limits.history,
            room_bytes: secure_chat::store::KEEP_ROOM_BYTES,
            days: secure_chat::store::KEEP_DAYS,
        };
        let opened = secure_chat::store::open(dir, retention)
            .unwrap_or_else(|err| panic!("store: {err}"))
            .expect("the data directory can be written");
        server.keep_in(opened);
        let store = server.store_counts();
        let mut running = TestServer::run(server);
        running.store = store;
        running
    }

    /// One of several servers sharing their chat through the Redis at
    /// `redis_url`, as node `node`, with `settings` for the link.
    #[cfg(feature = "redis")]
    pub fn start_linked(
        pki: &Pki,
        limits: Limits,
        redis_url: &str,
        node: &str,
        settings: secure_chat::linked::redis_link::LinkSettings,
    ) -> TestServer {
        let config = tls::server_config(&pki.cert, &pki.key, None).unwrap();
        let mut server = Server::bind("127.0.0.1:0", config, limits).unwrap();
        use secure_chat::linked::{redis_link::RedisLink, Linked};
        let link = RedisLink::open(redis_url, node, settings)
            .unwrap_or_else(|error| panic!("link: {error}"));
        server.share(Box::new(Linked::new(link)));
        TestServer::run(server)
    }

    fn run(server: Server) -> TestServer {
        let addr = server.local_addr();
        let stopper = server.stopper();
        let gauges = server.gauges();
        let (done, finished) = crossbeam_channel::bounded(1);
        thread::spawn(move || {
            let _ = done.send(server.run());
        });
        TestServer {
            addr,
            stopper,
            gauges,
            finished,
            stopped: false,
            store: None,
        }
    }

    /// Stops the server and checks that it stopped, threads and all.
    pub fn stop(mut self) {
        self.stopped = true;
        self.stopper.stop();
        match self.finished.recv_timeout(TIMEOUT) {
            Ok(result) => result.expect("server failed"),
            Err(_) => panic!("server did not stop within {TIMEOUT:?}"),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A test that failed before `stop` still stops its server.
        if !self.stopped {
            self.stopper.stop();
            let _ = self.finished.recv_timeout(TIMEOUT);
        }
    }
}

impl TestServer {
    /// The store's queue and losses, for a server started with one.
    pub fn store_counts(&self) -> Option<&secure_chat::store::StoreCounts> {
        self.store.as_deref()
    }

    /// Connections the server holds right now, in any state (handshake,
    /// chatting, closing).
    pub fn open_connections(&self) -> usize {
        self.gauges.open_connections()
    }
}

/// A server with [`test_limits`] and `count` clients that have each seen
/// everyone after them join: the room most chat tests start from.
pub fn chat_of(count: usize) -> (Pki, TestServer, Vec<TestClient>) {
    chat_with(count, test_limits())
}

/// [`chat_of`] with other limits.
pub fn chat_with(count: usize, limits: Limits) -> (Pki, TestServer, Vec<TestClient>) {
    let pki = Pki::new();
    let server = TestServer::start_with(&pki, limits);
    let clients: Vec<TestClient> = (0..count)
        .map(|_| TestClient::connect(server.addr, &pki.ca))
        .collect();
    // Each earlier client hears of each later one joining.
    for (i, client) in clients.iter().enumerate() {
        for later in &clients[i + 1..] {
            assert_eq!(
                client.recv(),
                format!("notice {} joined #lobby", later.nick)
            );
        }
    }
    (pki, server, clients)
}

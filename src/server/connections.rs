//! Every open connection, counted: the number open, how many each
//! address has open (with `--max-per-ip`), and each one's socket, so that
//! a stopping server can wake the threads blocked on them.

use super::*;

/// Every open connection, in any state: how many there are, in all and per
/// address, and each one's socket, so that shutdown can cut them.
#[derive(Debug, Default)]
pub(super) struct Connections {
    open: AtomicUsize,
    /// Counted only with `max_per_ip`.
    per_ip: Mutex<HashMap<Block, usize>>,
    /// Each one's socket, and whether it is in the chat yet.
    sockets: Mutex<HashMap<ClientId, (Arc<TcpStream>, bool)>>,
    /// What happens once per connection, counted for the metrics.
    pub(super) counters: Arc<Counters>,
    /// The server is shutting down: a client that leaves now is counted as
    /// shut out, however its connection ended.
    stopping: AtomicBool,
}

impl Connections {
    /// How many are open.
    pub(super) fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// From now on, those who leave are counted as shut out.
    pub(super) fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// True once the server is shutting down.
    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub(super) fn add(&self, id: ClientId, socket: Arc<TcpStream>) {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.counters.accepted();
        lock(&self.sockets).insert(id, (socket, false));
    }

    /// From now on its shard, not shutdown's first sweep, closes it.
    pub(super) fn chatting(&self, id: ClientId) {
        if let Some(entry) = lock(&self.sockets).get_mut(&id) {
            entry.1 = true;
        }
    }

    /// Counts a connection against its address (for IPv6, its /64: see
    /// [`Block`]), unless that address has twice `max` already: its extra
    /// members the hub refuses by name, but connections still in their
    /// handshake are counted only here, so that one address cannot take
    /// every handshake slot.
    pub(super) fn count_per_ip(&self, peer: SocketAddr, max: usize) -> bool {
        let cap = max.max(1) * 2;
        let mut counts = lock(&self.per_ip);
        let count = counts.entry(Block::of(peer.ip())).or_default();
        if *count >= cap {
            log::debug!("{peer}: closed at once: {cap} connections from its address");
            return false;
        }
        *count += 1;
        true
    }

    /// Forgets a connection that closed; `per_ip` if it was counted
    /// against its address.
    pub(super) fn remove(&self, id: ClientId, ip: IpAddr, per_ip: bool) {
        lock(&self.sockets).remove(&id);
        if per_ip {
            let mut counts = lock(&self.per_ip);
            let block = Block::of(ip);
            if let Some(count) = counts.get_mut(&block) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&block);
                }
            }
        }
        self.open.fetch_sub(1, Ordering::SeqCst);
    }

    /// Cuts the connections still in their handshake, or all of them.
    pub(super) fn cut(&self, all: bool) {
        for (socket, chatting) in lock(&self.sockets).values() {
            if all || !chatting {
                // Fails only for a socket already disconnected.
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
    }
}

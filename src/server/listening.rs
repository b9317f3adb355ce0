//! The listening sockets: the chat's own, with the options every client
//! connection inherits, and the first address of a name that binds (the
//! metrics endpoint's too); and which failures of `accept` persist. Not
//! the accept loop, which is in the parent module.

use super::*;

/// Connections the kernel queues for `accept` while the accept loop is busy.
///
/// std listens with 128; a burst of clients (everyone reconnecting after a
/// restart) overflows that, and each client whose SYN was dropped waits a
/// second or more to retry. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// A listening socket on `addr`, as `TcpListener::bind` makes one (address
/// reuse on), but with a deeper backlog, and with the options every client
/// connection needs.
///
/// Linux gives each accepted socket the options of its listener, so they
/// are set once here rather than with six system calls per connection:
/// no Nagle delay (chat lines are small and interactive: send each batch
/// at once), TCP keepalive (see [`KEEPALIVE_IDLE`]) and
/// [`UNSENT_LIMIT`](slow_readers::UNSENT_LIMIT).
pub(super) fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, TcpKeepalive, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_tcp_notsent_lowat(slow_readers::UNSENT_LIMIT)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// A socket listening on the first of the addresses `addr` resolves to
/// that `listen` can bind, or why none could be: the chat's port, and the
/// metrics endpoint's.
pub(crate) fn bind_first(
    addr: &str,
    listen: impl Fn(SocketAddr) -> io::Result<TcpListener>,
) -> Result<TcpListener, Error> {
    let bind_error = |source| Error::Bind {
        addr: addr.to_string(),
        source,
    };
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address to bind");
    for candidate in addr.to_socket_addrs().map_err(bind_error)? {
        match listen(candidate) {
            Ok(listener) => return Ok(listener),
            Err(err) => last_error = err,
        }
    }
    Err(bind_error(last_error))
}

/// Errors after which `accept` fails again at once until something is freed.
pub(crate) fn is_resource_exhaustion(err: &io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(err.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

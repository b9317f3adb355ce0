//! # secure-chat: a multi-user chat over TCP and TLS
//!
//! A server ([`server::Server`], the `chat-server` binary) and a client
//! ([`client`], the `chat-client` binary). Plain blocking sockets from
//! `std::net`, OS threads, [rustls] for TLS, and queues between threads: no
//! async runtime, nothing hidden. Each client has one thread of its own on
//! the server; a few writer threads send to everyone.
//!
//! ## Reading order
//!
//! 1. [`tls`]: certificates and keys from PEM files; what the client trusts.
//! 2. [`duplex`]: the TLS handshake, then one connection split so that one
//!    thread reads while another writes, and writes without ever waiting.
//! 3. [`line`](mod@line): bytes into lines, with a length limit and no terminal
//!    control characters.
//! 4. [`protocol`]: what a line means, and how the server's lines look.
//! 5. [`hub`]: the one thread that owns the chat, and hands each line to
//!    the writers once; [`budget`], what the lines waiting for them cost.
//! 6. [`shard`]: the writer threads: send what fits, remember the rest,
//!    wait until the kernel has room; and cut the clients that stall.
//! 7. [`server`]: the accept loop, one thread per client, limits, shutdown;
//!    with [`throttle`] (flood control), [`capacity`] (what the machine
//!    allows), [`pool`] (threads kept between clients) and [`queue`] (the
//!    hub's inbox).
//! 8. [`client`]: the interactive client, [`outbox`], its writer, and
//!    [`screen`], how it shows lines.
//!
//! [`x509`], [`error`] and [`logging`] are supporting cast.
//!
//! ## The threads, and the path of one message
//!
//! ```text
//!  clients                               server
//!  ───────                               ─────────────────────────────────────────────
//!                      accept loop ── TCP socket ──> handshake thread: TLS handshake
//!                                                    (with a deadline), then hands the
//!                                                    two halves on and is free again
//!  alice: keyboard ─> writer ═══TLS═══> reading thread (alice) ──Event::Frame──> hub
//!                                                                                 │
//!                                              one Work::Deliver per shard with   │
//!                                              someone in the room, not per client│
//!                                                       ┌─────────────────────────┤
//!                                                       v                         v
//!                                                    shard 0                   shard 1
//!  bob:   screen <─ reader <═══════════TLS══════ (alice, bob, ...)        (carol, ...)
//! ```
//!
//! 1. Alice types `hello`. Her keyboard thread queues it; her writer
//!    thread encrypts it (rustls) and writes the TLS records to the socket.
//! 2. On the server, alice's **reading thread** waits on the socket without
//!    holding any lock, then locks her rustls connection just long enough
//!    to decrypt, and frames the bytes into lines ([`line::LineFramer`]).
//! 3. The line goes to the **hub** as a [`hub::Event`], through a bounded
//!    queue. The hub is the only owner of who is where; it formats
//!    `chat alice hello` once, as one [`budget::Outgoing`], and for each
//!    writer shard with someone in the room it queues one delivery: the
//!    line and the room. At the end of its round, each shard gets its
//!    batch with one lock and at most one wake-up.
//! 4. The **shard** adds a pointer to the line to the queue of each of its
//!    clients in the room, alice included (her acknowledgement). Then, for
//!    each, it encrypts what waits into as few records as it can and sends
//!    them without waiting. What the kernel does not take stays pending,
//!    and the shard hears from epoll when that socket has room again.
//! 5. Bob's client decrypts, frames, and prints `<alice> hello`.
//!
//! The certificate check happens once per connection, before all this:
//! the client's handshake ([`duplex::handshake`]) fails unless the server's
//! certificate chains to a trusted CA and names the host the client asked
//! for. There is no switch to skip it.
//!
//! ## Who waits for whom
//!
//! Every blocking call waits on one thing only:
//!
//! - a reading thread waits on its own socket; if its client floods, also
//!   on its own rate limit, and on room in the hub's queue;
//! - the hub waits on its queue, and, only when more lines wait for the
//!   writers than the memory budget allows, for the writers to catch up;
//! - a shard waits on epoll, for any of its sockets to have room, for new
//!   work, or for its next deadline; it never waits on one socket.
//!
//! So a client that stops reading makes nobody wait: its lines pile up in
//! its shard's queue until it is cut as stalled or too far behind. One
//! client alone cannot pin more than half the memory budget (its cap), so
//! it cannot pause the hub by itself. What makes others wait is by design:
//! a flood past the memory budget, or several clients behind at once with
//! that much waiting for them, pauses the hub, so every sender is slowed
//! by TCP, and no line is dropped; cutting the stalled ones ends the pause.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod budget;
pub mod capacity;
pub mod client;
pub mod duplex;
pub mod error;
pub mod hub;
pub mod line;
pub mod logging;
pub mod outbox;
pub mod pool;
pub mod protocol;
pub mod queue;
pub mod screen;
pub mod server;
pub mod shard;
pub mod throttle;
pub mod tls;
pub mod x509;

pub use error::Error;
